"""The ``circus-plugin`` command: run one plugin against a circusd.

It takes circus 0.19's flags, so ``circus-plugin`` is a drop-in for circus's own runner,
plus ``--ini PATH NAME`` to run a ``[plugin:NAME]`` section of a circus.ini as circusd would,
and ``--ini PATH --all`` (or several NAMEs) to run many sections in one process, in a
:class:`~circus_plugins.host.PluginHost`.
Bad input ends it with one line on stderr and exit status 2.
"""
import argparse
import logging
import logging.handlers
import signal
import sys
import traceback
from typing import List, Optional, Tuple, Union
from urllib.parse import urlparse

from ._endpoint import check_endpoint, check_ssh_server
from ._loader import is_circus_plugin, load_plugin_class
from ._redact import redact_text
from ._version import __version__
from .config import (DEFAULT_CHECK_DELAY, DEFAULT_ENDPOINT, DEFAULT_PUBSUB, decode_config,
                     read_ini_circus, read_ini_plugin, to_number)
from .errors import CircusPluginError, ConfigError

log = logging.getLogger('circus_plugins')

LOG_FORMAT = '%(asctime)s %(name)s[%(process)d] [%(levelname)s] %(message)s'
LOG_DATE_FORMAT = '%Y-%m-%d %H:%M:%S'
_LEVELS = ('critical', 'error', 'warning', 'info', 'debug')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='circus-plugin', description='Runs a plugin.')
    parser.add_argument('--endpoint', help='circusd command endpoint (default %s)'
                        % DEFAULT_ENDPOINT)
    parser.add_argument('--pubsub', help='circusd pub/sub endpoint (default %s)'
                        % DEFAULT_PUBSUB)
    parser.add_argument('--config', help='plugin options, key:value:::key2:value2 '
                        'or a JSON object')
    parser.add_argument('--check-delay', help='check delay in seconds (default %s)'
                        % DEFAULT_CHECK_DELAY)
    parser.add_argument('--log-level', dest='loglevel', default='info',
                        help='log level: %s (default info)' % ', '.join(_LEVELS))
    parser.add_argument('--log-output', dest='logoutput', default='-',
                        help='"-" (stderr), "stdout", syslog://host:port?facility '
                        'or a file path (default -)')
    parser.add_argument('--ssh', default=None, help='SSH server user@host:port')
    parser.add_argument('--ini', nargs='+', metavar=('PATH', 'NAME'),
                        help='run section [plugin:NAME] of the circus.ini at PATH; with '
                        'several NAMEs, or --all, run them in one process')
    parser.add_argument('--all', action='store_true',
                        help='with --ini PATH: run every [plugin:...] section of PATH')
    parser.add_argument('--version', action='store_true',
                        help='print the version and exit')
    parser.add_argument('plugin', nargs='?',
                        help='the plugin class: package.module.Class or package.module:Class')
    return parser


def configure_logging(level: str, output: str) -> None:
    """Send the root logger's records to ``output`` at ``level``, in circus's format."""
    if level.lower() not in _LEVELS:
        raise ConfigError('--log-level: %r is not one of %s' % (level, ', '.join(_LEVELS)))
    handler: logging.Handler
    if output == '-':
        handler = logging.StreamHandler(sys.stderr)
    elif output == 'stdout':
        handler = logging.StreamHandler(sys.stdout)
    elif output.startswith('syslog://'):
        url = urlparse(output)
        address: Union[str, Tuple[str, int]] = url.path
        if url.netloc:
            if not url.hostname:  # the handler would fail at every record
                raise ConfigError('--log-output: %r names no syslog host' % output)
            try:
                port = url.port or 514
            except ValueError:  # not a number, or beyond 65535
                raise ConfigError('--log-output: %r names no syslog port' % output) from None
            address = (url.hostname, port)
        facility = url.query or 'user'
        if facility not in logging.handlers.SysLogHandler.facility_names:
            raise ConfigError('--log-output: unknown syslog facility %r' % facility)
        handler = logging.handlers.SysLogHandler(address=address, facility=facility)
    else:
        try:
            handler = logging.handlers.WatchedFileHandler(output)
        except OSError as exc:
            raise ConfigError('--log-output: cannot open %r: %s' % (output, exc)) from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``circus-plugin`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    debug = args.loglevel.lower() == 'debug'
    try:
        configure_logging(args.loglevel, args.logoutput)
        plugin = _build(parser, args)
    except CircusPluginError as exc:
        return _fail(exc, debug)
    except Exception as exc:  # a plugin's own constructor refusing its options
        return _fail('%s: %s' % (type(exc).__name__, exc), debug)
    log.info('Starting')
    if is_circus_plugin(type(plugin)):
        return _run_circus_plugin(plugin)
    status = 0
    try:
        plugin.start()
    except Exception as exc:
        log.error('plugin %s failed: %s', plugin.name, exc, exc_info=debug)
        status = 1
    finally:
        log.info('Stopping')
        plugin.stop()
    return status


def _build(parser, args):
    name, config = args.plugin, {}
    endpoint, pubsub, check_delay = DEFAULT_ENDPOINT, DEFAULT_PUBSUB, DEFAULT_CHECK_DELAY
    if args.all and not args.ini:
        raise ConfigError('--all goes with --ini PATH')
    if args.ini:
        path, sections = args.ini[0], args.ini[1:]
        if name:
            raise ConfigError('give either a plugin name or --ini, not both')
        if args.all and sections:
            raise ConfigError('give either section names or --all after --ini PATH')
        if len(sections) == 1:
            ini = read_ini_plugin(path, sections[0])
            name, config = ini.use, ini.config
            endpoint, pubsub, check_delay = ini.endpoint, ini.pubsub_endpoint, ini.check_delay
        elif sections or args.all:
            name = 'circus_plugins.host.PluginHost'
            config = {'config': path, 'plugins': ' '.join(sections)}
            endpoint, pubsub, check_delay = read_ini_circus(path)
        else:
            raise ConfigError('--ini %s: name the [plugin:NAME] sections to run, or --all'
                              % path)
    elif not name:
        parser.print_usage(sys.stderr)
        raise ConfigError('no plugin given: name a plugin class or use --ini PATH NAME')
    config.update(decode_config(args.config))
    where = '--ini %s: ' % args.ini[0] if args.ini else ''
    endpoint = check_endpoint(args.endpoint or endpoint,
                              '--endpoint' if args.endpoint else where + 'endpoint')
    pubsub = check_endpoint(args.pubsub or pubsub,
                            '--pubsub' if args.pubsub else where + 'pubsub_endpoint')
    check_ssh_server(args.ssh, '--ssh')
    if args.check_delay is not None:
        check_delay = to_number(args.check_delay, '--check-delay', minimum=0)
    factory = load_plugin_class(name)
    log.info('Loading the plugin...')
    log.info('Endpoint: %r', endpoint)
    log.info('Pub/sub: %r', pubsub)
    return factory(endpoint, pubsub, check_delay, args.ssh, **config)


def _run_circus_plugin(plugin) -> int:
    """Run a plugin built on circus 0.19's own base as circus's runner does: its
    ``start()`` runs the loop in this thread, and ``stop()`` follows. SIGTERM stops it
    like Ctrl-C, where circus's runner would die without ``handle_stop()``."""
    log.info('plugin %s derives from circus.plugins.CircusPlugin (circus 0.19\'s base): '
             'running it as circus 0.19 would', plugin.name or type(plugin).__name__)

    def interrupt(signum, frame):
        raise KeyboardInterrupt()
    previous = signal.signal(signal.SIGTERM, interrupt)
    status = 0
    try:
        plugin.start()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        log.error('plugin %s failed: %s', plugin.name, exc,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        status = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.info('Stopping')
        plugin.stop()
    return status


def _fail(problem, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    # Whatever the error quotes (an option, a URL) may hold a password.
    print('circus-plugin: error: %s' % redact_text(str(problem)), file=sys.stderr)
    return 2
