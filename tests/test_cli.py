"""The circus-plugin command, run as a real process."""
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from circus_plugins import ConfigError
from circus_plugins.cli import configure_logging
from circus_plugins.testing import EventRecorder, PluginProcess, wait_connected, wait_for
from conftest import PLUGIN_ENV


def run_cli(*args, timeout=10):
    return subprocess.run([sys.executable, '-m', 'circus_plugins'] + list(args),
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **PLUGIN_ENV))


def start_cli(*args, stderr):
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'circus-plugin')]
                            + list(args), stdout=subprocess.DEVNULL, stderr=stderr,
                            env=dict(os.environ, **PLUGIN_ENV))


def signal_once_dumped(proc, dump, signum):
    """Send ``signum`` once the ConfigDump plugin run by ``proc`` has written to ``dump``
    (in its handle_init); return the exit status."""
    try:
        wait_for(lambda: dump.exists() and dump.read_text(), what='the plugin to start')
        proc.send_signal(signum)
        return proc.wait(timeout=5)
    finally:
        proc.kill()


def test_seed_logger_by_cli_keeps_every_event_on_sigterm(circusd, tmp_path):
    log_file, err_file = tmp_path / 'events.log', tmp_path / 'stderr.txt'
    with open(err_file, 'w') as err:
        proc = start_cli('--endpoint', circusd.endpoint, '--pubsub', circusd.pubsub_endpoint,
                         '--config', 'filename:%s' % log_file,
                         # Under load the spawn seen here may not have reached the plugin
                         # yet: a record-keeping plugin drains what is on its way at stop.
                         'sample_plugins.DrainingLogger', stderr=err)
    try:
        wait_for(log_file.exists, what='the plugin to open its file')
        wait_connected(proc.pid, circusd.pubsub_endpoint)
        with EventRecorder(circusd.pubsub_endpoint) as events:
            events.sync(circusd, 'sleeper')
            events.events.clear()  # see test_seed_logger_under_circusd_keeps_every_event
            circusd.call('incr', name='sleeper')
            events.wait(b'watcher.sleeper.spawn')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
    text = log_file.read_text()
    for topic, message in events.events:
        assert '%s::%s' % (topic, message) in text
    lines = [line.split('[INFO] ', 1)[1] for line in err_file.read_text().splitlines()
             if '[INFO]' in line]
    assert lines[:4] == ['Loading the plugin...', "Endpoint: '%s'" % circusd.endpoint,
                         "Pub/sub: '%s'" % circusd.pubsub_endpoint, 'Starting']
    assert lines[-1] == 'Stopping'


def test_sigint_and_ini_section(circusd, tmp_path):
    dump = tmp_path / 'dump.jsonl'
    ini = tmp_path / 'plugins.ini'
    ini.write_text('[circus]\nendpoint = %s\npubsub_endpoint = %s\n\n'
                   '[plugin:dump]\nuse = sample_plugins.ConfigDump\ndump = %s\n'
                   'greeting = hello world\n' % (circusd.endpoint, circusd.pubsub_endpoint, dump))
    proc = start_cli('--ini', str(ini), 'dump', stderr=subprocess.DEVNULL)
    assert signal_once_dumped(proc, dump, signal.SIGINT) == 0
    first, *rest = dump.read_text().splitlines()
    started = json.loads(first)
    assert started['endpoint'] == circusd.endpoint and started['check_delay'] == 5.0
    assert started['config'] == {'dump': str(dump), 'greeting': 'hello world',
                                 'name': 'plugin:dump'}
    assert rest[-1] == 'stopped'


@pytest.mark.parametrize('args, culprit', [
    (['no_such_module.Plugin'], "no_such_module"),
    (['sample_plugins.Missing'], "'Missing'"),
    (['sample_plugins.NotAPlugin'], 'NotAPlugin'),
    (['sample_plugins'], "'sample_plugins'"),
    (['sample_plugins.Logger'], "'filename'"),
    (['--config', 'filename', 'sample_plugins.Logger'], "'filename'"),
    (['--config', '{"filename": ', 'sample_plugins.Logger'], 'JSON'),
    (['--check-delay', 'soon', 'sample_plugins.Logger'], "'soon'"),
    (['--log-level', 'loud', 'sample_plugins.Logger'], "'loud'"),
    (['--config', 'filename:x:::active:perhaps', 'sample_plugins.Logger'], "'perhaps'"),
    (['--ini', '/nonexistent.ini', 'x'], '/nonexistent.ini'),
    ([], 'no plugin'),
    (['--endpoint', '127.0.0.1:5555', 'sample_plugins.ConfigDump'],
     "--endpoint: '127.0.0.1:5555'"),
    (['--pubsub', 'tcp://127.0.0.1:notaport', 'sample_plugins.ConfigDump'],
     "--pubsub: 'tcp://127.0.0.1:notaport'"),
    (['--endpoint', 'tcp://127.0.0.1:65536', 'sample_plugins.ConfigDump'],
     "--endpoint: 'tcp://127.0.0.1:65536'"),
    (['--ssh', 'me@host:22:x', 'sample_plugins.ConfigDump'], "--ssh: 'me@host:22:x'"),
])
def test_bad_input_is_one_line_and_status_2(args, culprit):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if 'error' in line]
    assert len(errors) == 1 and culprit in errors[0], result.stderr
    assert 'Traceback' not in result.stderr


def test_a_syslog_output_without_a_host_is_refused(monkeypatch):
    monkeypatch.setattr(logging.getLogger(), 'handlers', [])  # put back afterwards
    with pytest.raises(ConfigError, match="'syslog://:514' names no syslog host"):
        configure_logging('info', 'syslog://:514')


@pytest.mark.parametrize('port', ['notaport', '70000', '-1'])
def test_a_syslog_output_with_a_bad_port_is_refused(monkeypatch, port):
    monkeypatch.setattr(logging.getLogger(), 'handlers', [])  # put back afterwards
    with pytest.raises(ConfigError, match="'syslog://host:%s' names no syslog port" % port):
        configure_logging('info', 'syslog://host:%s' % port)


def test_a_fatal_error_never_prints_a_password():
    result = run_cli('--log-output', 'syslog://user:s3cret-pw@127.0.0.1:notaport',
                     'circus_plugins.flapping.Flapping')
    assert result.returncode == 2 and 'names no syslog port' in result.stderr
    assert 's3cret-pw' not in result.stderr + result.stdout, result.stderr


def test_debug_shows_the_traceback():
    result = run_cli('--log-level', 'debug', 'no_such_module.Plugin')
    assert result.returncode == 2 and 'Traceback' in result.stderr


def test_version_and_help():
    from circus_plugins import __version__
    assert run_cli('--version').stdout.strip() == __version__
    usage = run_cli('--help').stdout
    for flag in ('--endpoint', '--pubsub', '--config', '--check-delay', '--log-level',
                 '--log-output', '--ssh', '--ini', '--version'):
        assert flag in usage


def test_signal_during_handle_init_still_stops_gracefully(tmp_path):
    dump = tmp_path / 'dump.jsonl'
    proc = start_cli('--config', 'dump:%s' % dump, 'sample_plugins.SlowStart',
                     stderr=subprocess.DEVNULL)
    assert signal_once_dumped(proc, dump, signal.SIGINT) == 0
    assert dump.read_text().splitlines()[-1] == 'stopped'


def test_a_bad_endpoint_in_a_circus_ini_is_named(tmp_path):
    ini = tmp_path / 'circus.ini'
    ini.write_text('[circus]\nendpoint = tcp://127.0.0.1:notaport\n\n'
                   '[plugin:dump]\nuse = sample_plugins.ConfigDump\ndump = x\n')
    result = run_cli('--ini', str(ini), 'dump')
    assert result.returncode == 2, result.stderr
    assert "error: --ini %s: endpoint: 'tcp://127.0.0.1:notaport'" % ini in result.stderr


def test_initialize_override_runs_under_circus_plugin(circusd, tmp_path):
    dump = tmp_path / 'dump.txt'
    with PluginProcess('sample_plugins.TimerInInitialize', circusd,
                       config={'dump': dump}, env=PLUGIN_ENV) as plugin:
        wait_for(lambda: dump.exists() and dump.read_text().count('tick ok') >= 2,
                 what='ticks of the timer started in initialize()')
    assert plugin.returncode == 0, plugin.log()
    assert dump.read_text().startswith('handle_init\ninitialize context=True')


def test_a_plugin_on_circus_base_runs_as_circus_would(circusd, tmp_path):
    dump = tmp_path / 'dump.txt'
    with PluginProcess('sample_plugins.CircusBased', circusd, config={'dump': dump},
                       env=PLUGIN_ENV) as plugin:
        wait_for(lambda: dump.exists() and 'init' in dump.read_text(),
                 what='the plugin to start')
        wait_connected(plugin.pid, circusd.pubsub_endpoint)

        def got_an_event():
            circusd.call('incr', name='sleeper')
            return 'watcher.sleeper.spawn' in dump.read_text()
        wait_for(got_an_event, what='an event to reach the plugin', interval=0.1)
    assert plugin.returncode == 0, plugin.log()
    assert dump.read_text().splitlines()[-1] == 'stopped'  # SIGTERM ran handle_stop
    assert "derives from circus.plugins.CircusPlugin (circus 0.19's base)" in plugin.log()
