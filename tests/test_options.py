"""Every option of every bundled plugin refuses bad values at construction.

Each refusal is a ConfigError of one line naming the plugin, the option and the value; the
same comes out of ``circus-plugin`` as exit status 2 and a single line on stderr.
"""
import os
import subprocess
import sys

import pytest

from circus_plugins import ConfigError
from circus_plugins.command_reloader import CommandReloader
from circus_plugins.config import MAX_SECONDS, encode_config, redact_url
from circus_plugins.flapping import Flapping
from circus_plugins.http_observer import HttpObserver
from circus_plugins.redis_observer import RedisObserver
from circus_plugins.resource_watcher import ResourceWatcher
from circus_plugins.statsd import FullStats, StatsdEmitter
from circus_plugins.testing import free_port
from circus_plugins.watchdog import WatchDog

ENDPOINTS = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0)

NUMBER = ['nan', 'inf', '-inf', 'NaN', 'words', '1_000', '\uff15', '0x10', '1e400']
TOO_LONG = str(MAX_SECONDS + 1)
DURATION = NUMBER + ['', '0', '-1', '1e300', TOO_LONG]
# Where empty means "not set" (the watcher's own value): everything else is refused.
OPTIONAL_DURATION = NUMBER + ['-1', '1e300', TOO_LONG]
COUNT = ['nan', 'inf', 'three', '', '1.5', '1e3', '1_000', '\uff15', '2000001',
         '9' * 30, '9' * 5000]
PORT = ['0', '-1', '65536', '99999', 'http', '80.5', 'nan', '', '1_000', '\uff15']
BOOL = ['perhaps', 'nan', '2', 'yess']
SIGNAL = ['SIGNOPE', '999', '-1', '\uff15', 'SIGRTMIN+99', 'KILL!']
NAME = ['web\nother', 'a\x00b', '\x7f']
REGEX = ['(', '[z-a]', 'a{99999999999}', '(' * 5000 + ')' * 5000, '(?<=a+)b']
PERCENT = ['nan', 'inf', '-5', 'lots', '1e300', '\uff15', '1_0']
MEMORY = ['nan', 'inf', '-1', '150', '12 parsecs', '1.2.3M', '9' * 400 + 'M',
          '99999999999P', 'M', '-5M']
HOST = ['', ' ', 'bad host', 'a..b', '-a', 'http://x/', '999.1.1.1', 'x' * 300]

ENDPOINT = ['', 'nowhere', 'tcp://', 'tcp://127.0.0.1', 'tcp://127.0.0.1:0',
            'tcp://127.0.0.1:65536', 'http://127.0.0.1:5557', 'tcp://a b:5557']
BASE = {'active': BOOL, 'call_timeout': DURATION, 'stats_endpoint': ENDPOINT,
        # A list, in which each bad endpoint is named.
        'events_publish': ENDPOINT, 'events_subscribe': ENDPOINT[1:-1]}
STATSD = dict(BASE, host=HOST + ['::1'], port=PORT,
              sample_rate=NUMBER + ['', '-0.1', '1.5'],
              application_name=['', ' ', '.', 'a..b', 'web.', 'x\ny'],
              prefix=['.a', 'a.', 'a..b', 'x\ty'])
OBSERVER = dict(STATSD, loop_rate=DURATION)

#: plugin class -> {option: bad values}
TABLE = {
    StatsdEmitter: STATSD,
    FullStats: OBSERVER,
    HttpObserver: dict(OBSERVER, timeout=DURATION, restart_on_error=NAME, check_url=[
        'localhost', 'ftp://h/', 'http://[::1', 'http://h:65536/', 'http://h:0/',
        'http://h:port/', 'http://h /x', 'http://', 'http://:80/', 'http://u@/', '',
        'http://h/\x01']),
    RedisObserver: dict(OBSERVER, timeout=DURATION, restart_on_timeout=NAME, redis_url=[
        'http://h/', 'redis://h:65536/0', 'redis://h:port/0', 'redis://h:0/0',
        'redis://h/notadb', 'redis://h/0/1', '', 'redis://[::1',
        'redis://h/0?socket_timeout=soon']),
    ResourceWatcher: dict(OBSERVER, watcher=['', ' '] + NAME, service=NAME,
                          max_cpu=PERCENT, min_cpu=PERCENT + ['50M'],
                          health_threshold=PERCENT, max_mem=MEMORY, min_mem=MEMORY,
                          max_count=COUNT + ['-1'], process_children=BOOL,
                          child_signal=SIGNAL + ['']),
    WatchDog: dict(BASE, loop_rate=DURATION, ip=HOST + ['no-such-host.invalid'], port=PORT,
                   max_count=COUNT + ['0'], msg_regex=REGEX + ['(?P<x>.*)'],
                   watchers_regex=REGEX, watchers_stop_signal=SIGNAL,
                   watchers_graceful_timeout=OPTIONAL_DURATION),
    Flapping: dict(BASE, attempts=COUNT + ['0', '-1'], window=OPTIONAL_DURATION + [''],
                   retry_in=OPTIONAL_DURATION + [''], max_retry=COUNT + ['-2']),
    CommandReloader: dict(BASE, loop_rate=DURATION),
}
#: The options a plugin cannot be built without.
REQUIRED = {ResourceWatcher: {'watcher': 'web'}}

# A duration above a week but below 2**53 is refused only where the option is read with
# maximum=MAX_SECONDS: call_timeout (plugin.py) and loop_rate (periodic.py) are not yet.
# 1e10 s also overflows thread waits: stop() raises OverflowError.
NOT_YET = set()


def _cases():
    for cls, options in TABLE.items():
        for option, values in options.items():
            for value in values:
                marks = []
                if (option, value) in NOT_YET:
                    marks.append(pytest.mark.xfail(
                        strict=True, reason='%s has no maximum in the base classes yet'
                        % option))
                yield pytest.param(cls, option, value, marks=marks,
                                   id='%s-%s-%s' % (cls.__name__, option,
                                                    ascii(value)[:24]))


def _build(cls, **options):
    return cls(*ENDPOINTS, **dict(REQUIRED.get(cls, {}), **options))


def test_every_plugin_builds_with_its_required_options():
    before = _open_fds()
    for cls in TABLE:
        _build(cls)  # a constructor opens nothing, not even the loop it may make later
    assert _open_fds() == before


@pytest.mark.parametrize('cls, option, value', list(_cases()))
def test_bad_value_is_refused_naming_plugin_option_and_value(cls, option, value):
    with pytest.raises(ConfigError) as info:
        _build(cls, **{option: value})
    message = str(info.value)
    assert '\n' not in message
    assert 'plugin %s' % cls.name in message
    assert repr(option) in message
    if len(value) < 100:  # a huge regular expression is quoted too, but let us not check
        shown = redact_url(value)  # URLs are shown without their user information
        assert repr(shown) in message or repr(shown.strip()) in message, message


def _open_fds():
    return len(os.listdir('/proc/self/fd'))


# One option of each plugin and of each layer under it: the plugin's own, the statsd
# part's, the periodic part's.
@pytest.mark.parametrize('cls, option, value', [
    (StatsdEmitter, 'port', 'http'), (StatsdEmitter, 'call_timeout', 'nan'),
    (FullStats, 'loop_rate', 'nan'), (FullStats, 'sample_rate', 'inf'),
    (HttpObserver, 'check_url', 'http://[::1'), (HttpObserver, 'loop_rate', 'inf'),
    (RedisObserver, 'redis_url', 'http://h/'), (ResourceWatcher, 'max_mem', '150'),
    (WatchDog, 'msg_regex', '('), (WatchDog, 'loop_rate', '0'),
    (Flapping, 'window', 'inf'), (CommandReloader, 'loop_rate', 'nan'),
])
def test_a_refused_plugin_leaves_nothing_open(cls, option, value):
    before = _open_fds()
    for _ in range(5):
        with pytest.raises(ConfigError):
            _build(cls, **{option: value})
    assert _open_fds() == before


def test_check_delay_is_a_finite_number():
    for bad in ('nan', 'inf', float('nan'), float('inf'), '-1', 'x'):
        with pytest.raises(ConfigError, match='check_delay'):
            Flapping('e', 'p', bad)


# -- through circus-plugin ------------------------------------------------------------------

def run_cli(plugin, config, *args):
    return subprocess.run(
        [sys.executable, '-m', 'circus_plugins', '--endpoint',
         'tcp://127.0.0.1:%d' % free_port(), '--pubsub', 'tcp://127.0.0.1:%d' % free_port(),
         '--config', encode_config(config)] + list(args) + [plugin],
        capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize('plugin, option, value', [
    ('circus_plugins.statsd.FullStats', 'loop_rate', 'nan'),
    ('circus_plugins.watchdog.WatchDog', 'loop_rate', 'nan'),
    ('circus_plugins.flapping.Flapping', 'window', 'inf'),
    ('circus_plugins.http_observer.HttpObserver', 'check_url', 'http://[::1'),
    ('circus_plugins.resource_watcher.ResourceWatcher', 'max_mem', '1e400'),
])
def test_circus_plugin_exits_2_with_one_line(plugin, option, value):
    config = {option: value}
    if 'ResourceWatcher' in plugin:
        config['watcher'] = 'web'
    result = run_cli(plugin, config, '--log-level', 'warning')
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('circus-plugin: error: plugin ')
    assert repr(option) in lines[0] and repr(value) in lines[0]
