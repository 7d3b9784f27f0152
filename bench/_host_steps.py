"""What each plugin of a host costs, step by step: ``python _host_steps.py INI``.

Does what ``circus-plugin --ini INI --all`` does, one section at a time and in the file's
order: import the plugin's class, build it, start it on the one ZeroMQ context the
plugins share (as :class:`~circus_plugins.host.PluginHost` does). After each step it
prints a tab-separated line: the step, the process's resident memory once steady (MiB)
and how many modules the step loaded. Then it stops the plugins. Linux only (it reads
``/proc/self/statm``, not psutil, which would weigh on what it measures).
"""
import os
import sys
import time

_PAGE = os.sysconf('SC_PAGE_SIZE')


def _rss_mb():
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * _PAGE / 2 ** 20


def _steady_rss(timeout=3.0):
    """RSS once two readings 0.1 s apart differ by less than 16 KiB (a started plugin's
    thread takes a moment to settle), or at ``timeout`` seconds."""
    last, deadline = _rss_mb(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _rss_mb()
        if abs(now - last) < 16 / 1024:
            return now
        last = now
    return last


def _say(step, modules_before):
    print('%s\t%.2f\t%d' % (step, _steady_rss(), len(sys.modules) - modules_before),
          flush=True)
    return len(sys.modules)


def main(ini):
    count = _say('python', len(sys.modules))
    from circus_plugins import cli  # what the circus-plugin script imports first
    from circus_plugins._loader import load_plugin_class
    from circus_plugins.config import ini_plugin_names, read_ini_circus, read_ini_plugin
    import zmq
    cli.configure_logging('warning', '-')
    endpoint, pubsub, check_delay = read_ini_circus(ini)
    context = zmq.Context()
    count = _say('circus_plugins.cli imported', count)
    plugins = []
    try:
        for name in ini_plugin_names(ini):
            section = read_ini_plugin(ini, name)
            factory = load_plugin_class(section.use)
            count = _say('%s: import' % name, count)
            plugin = factory(endpoint, pubsub, check_delay, None, **section.config)
            count = _say('%s: build' % name, count)
            plugins.append(plugin.start_background(context=context))
            count = _say('%s: start' % name, count)
    finally:
        for plugin in plugins:
            plugin.stop()
        context.term()


if __name__ == '__main__':
    main(sys.argv[1])
