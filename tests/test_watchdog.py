"""The watchdog plugin: options, heartbeats, and kills under a real circusd."""
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from circus_plugins import ConfigError
from circus_plugins.testing import EventRecorder, PluginProcess, ScriptedCircusd, free_port, \
    wait_connected, wait_for
from circus_plugins.config import to_signum
from circus_plugins import watchdog
from circus_plugins.watchdog import WatchDog

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
HEARTBEAT = os.path.join(TESTS_DIR, 'heartbeat.py')


def udp_port():
    return free_port(socket.SOCK_DGRAM)


def beat_cmd(port, directory, *flags):
    """A watcher command running tests/heartbeat.py (see there)."""
    return ' '.join([sys.executable, HEARTBEAT, str(port), str(directory)] + list(flags))


def silence(directory, pid):
    """Make heartbeat.py process ``pid`` stop sending (it stays alive)."""
    open(os.path.join(str(directory), str(pid)), 'w').close()


# -- options ----------------------------------------------------------------------------------

def test_defaults():
    dog = WatchDog('e', 'p', 5.0)
    assert (dog.ip, dog.port, dog.loop_rate, dog.max_count) == ('127.0.0.1', 1664, 60.0, 3)
    assert dog.msg_regex.pattern == '^(?P<pid>.*);(?P<timestamp>.*)$'
    assert dog.watchers_regex.pattern == '.*'
    assert dog.stop_signal is None and dog.graceful_timeout is None
    dog = WatchDog('e', 'p', 5.0, None, watchers_stop_signal='SIGKILL',
                   watchers_graceful_timeout='2.5', loop_rate='0.5', max_count='1')
    assert (dog.stop_signal, dog.graceful_timeout) == (signal.SIGKILL, 2.5)
    assert (dog.loop_rate, dog.max_count) == (0.5, 1)
    empty = WatchDog('e', 'p', 5.0, watchers_stop_signal='', watchers_graceful_timeout='')
    assert empty.stop_signal is None and empty.graceful_timeout is None


@pytest.mark.parametrize('option, value', [
    ('msg_regex', '(?P<pid>'), ('msg_regex', r'^(\d+);'), ('watchers_regex', '[web'),
    ('watchers_stop_signal', 'SIGNOPE'), ('watchers_stop_signal', '999'),
    ('watchers_graceful_timeout', 'soon'), ('watchers_graceful_timeout', '-1'),
    ('port', 'udp'), ('port', '70000'), ('ip', ''), ('loop_rate', '0'), ('max_count', '0'),
])
def test_bad_options_name_the_plugin_option_and_value(option, value):
    with pytest.raises(ConfigError) as caught:
        WatchDog('e', 'p', 5.0, **{option: value})
    message = str(caught.value)
    assert 'watchdog' in message and option in message and repr(value) in message


def test_signals_read_as_circus_reads_them():
    assert to_signum('SIGKILL') == to_signum('kill') == to_signum('9') == 9
    assert to_signum(' usr1 ') == signal.SIGUSR1
    assert to_signum('SIGRTMIN+1') == signal.SIGRTMIN + 1
    for bad in ('SIG_DFL', 'NOPE', '0x9', '-3'):
        with pytest.raises(ConfigError):
            to_signum(bad, 'watchers_stop_signal')


def test_a_port_in_use_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(('127.0.0.1', 0))
        port = taken.getsockname()[1]
        dog = WatchDog('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, port=str(port))
        with pytest.raises(ConfigError, match=r'watchdog: cannot listen on UDP '
                                              r'127\.0\.0\.1:%d .*in use' % port):
            dog.start_background()
        dog.stop()


# -- heartbeats -------------------------------------------------------------------------------

def test_malformed_datagrams_are_logged_and_ignored(circusd, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    port = udp_port()
    sleeper = circusd.pids('sleeper')[0]
    dog = WatchDog(circusd.endpoint, circusd.pubsub_endpoint, 1.0, port=str(port),
                   watchers_regex='^sleeper$')
    with dog, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        wait_for(lambda: sleeper in dog.processes, what='the sleeper to be found')
        bad = [b'nonsense', b'nonsense again', b'abc;1', b'-5;1', b'\xff\xfe;1',
               b'\xff;2', b'999999999;1', b'999999999;2']
        for datagram in bad:
            sender.sendto(datagram, ('127.0.0.1', port))
        sender.sendto(b'%d;%f' % (sleeper, time.time()), ('127.0.0.1', port))
        wait_for(lambda: dog.heartbeats == 1, what='the good heartbeat')
        assert dog.running and dog.kills == 0
    messages = [r.getMessage() for r in caplog.records if r.name == 'circus_plugins.watchdog']
    for kind, count in (('that msg_regex does not match', 1),
                        ('whose pid is not a positive integer', 1),
                        ('that is not UTF-8', 1),
                        ('heartbeat from pid 999999999, which is not watched', 1)):
        found = [m for m in messages if kind in m]
        assert len(found) == count, (kind, messages)
    assert "'nonsense'" in next(m for m in messages if 'does not match' in m)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), messages
    # The socket was closed at stop: the port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(('127.0.0.1', port))


def test_warnings_about_bad_input_are_rate_limited(caplog, monkeypatch):
    monkeypatch.setattr(watchdog, '_COMPLAINT_INTERVAL', 0.2)
    dog = WatchDog('e', 'p', 5.0)  # not started: heartbeat() reads a datagram
    for n in range(3):
        assert dog.heartbeat(b'nonsense %d' % n, ('10.0.0.1', 99)) is None
    warnings = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
    assert warnings() == ["ignored a datagram that msg_regex does not match: from "
                          "10.0.0.1:99: 'nonsense 0'; next such warning in 0.2 s at the "
                          "soonest"]
    # Once the interval has passed, the next one is logged with the count of the others.
    wait_for(lambda: dog.heartbeat(b'later') or len(warnings()) == 2,
             what='the next warning')
    assert "'later' (and " in warnings()[1] and ' more since the last warning' in warnings()[1]
    dog.heartbeat(b'\xff;1')  # another kind: said at once
    assert len(warnings()) == 3 and 'not UTF-8' in warnings()[2]


# -- with a scripted circusd ------------------------------------------------------------------

def scripted_dog(replies, **options):
    """A watchdog checking every 0.05 s, one check of silence; circusd's ``list``
    answers are not recorded."""
    options = dict({'loop_rate': '0.05', 'max_count': '1'}, **options)
    dog = WatchDog('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0, port=str(udp_port()),
                   **options)
    return ScriptedCircusd(dog, replies, ignore=['list'])


def test_the_processes_are_listed_again_until_circusd_answers(caplog, collector):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    failures = {None: 1, 'web': 1}  # the list of watchers fails once, then web's pids

    def listing(name=None):
        if failures.get(name):
            failures[name] -= 1
            return {'status': 'error', 'reason': 'no reply within 5 s'}
        return {'status': 'ok', 'watchers': ['web', 'plugin:me']} if name is None else \
            {'status': 'ok', 'pids': [41, 42] if name == 'web' else [99]}
    with scripted_dog({'list': listing, 'kill': {'status': 'ok'}}) as s:
        wait_for(lambda: 'watching 2 processes' in caplog.text, what='the second look')
        assert caplog.text.count('cannot list the processes to watch (will try again in '
                                 '0.05 s): no reply within 5 s') == 2
        kills = sorted([s.next_command(), s.next_command()], key=lambda c: c[1]['pid'])
        assert kills == [('kill', {'name': 'web', 'pid': pid}) for pid in (41, 42)]
    # The watcher's own stop signal was used: the event does not name one.
    bodies = [collector.next_event()[2] for _ in range(2)]
    assert sorted((body['pid'], body['signal']) for body in bodies) == [(41, None),
                                                                       (42, None)]


def test_a_kill_is_confirmed_retried_logged_and_emitted(caplog, collector):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    busy = {'status': 'error', 'errno': 5,
            'reason': 'arbiter is already running manage_watchers command'}
    kills = [{'status': 'error', 'errno': 3, 'reason': 'no such process'}, busy]

    def kill(**props):
        return kills.pop() if kills else {'status': 'ok'}
    replies = {'list': lambda name=None: {'status': 'ok', 'watchers': ['web'], 'pids': [41]},
               'kill': kill}
    with scripted_dog(replies, watchers_stop_signal='KILL') as s:
        assert s.next_command() == ('kill', {'name': 'web', 'pid': 41, 'signum': 9})
        assert s.next_command() == ('kill', {'name': 'web', 'pid': 41, 'signum': 9})
        wait_for(lambda: s.plugin.kills == 1, what='the kill to be counted')
        s.elapse(0.2)  # more checks: 41, killed, is not watched any more
        assert s.no_command() and s.plugin.processes == {}
    watcher, action, body = collector.next_event()  # the confirmed kill only
    assert (watcher, action, body['plugin']) == ('web', 'watchdog_kill', 'watchdog')
    assert (body['pid'], body['signal']) == (41, 'SIGKILL')
    assert 0.05 <= body['silent_for'] < 5
    assert collector.none_yet()
    assert "but could not kill it (trying again in 0.05 s): no such process" in caplog.text
    assert 'already running' not in caplog.text  # a busy circusd was asked again
    assert 'web: pid 41 sent no heartbeat for' in caplog.text
    assert 'killed it (signal SIGKILL)' in caplog.text


def test_a_process_that_ends_while_it_is_listed_is_not_watched():
    def listing(name=None):
        if name is None:
            return {'status': 'ok', 'watchers': ['web']}
        s.plugin.handle_recv((b'watcher.web.reap', b'{"process_pid": 41}'))  # meanwhile
        return {'status': 'ok', 'pids': [41, 42]}
    s = scripted_dog({'list': listing}, loop_rate='60')
    with s:
        wait_for(lambda: s.on_loop(lambda: s.plugin._discovered), what='the first look')
        assert list(s.plugin.processes) == [42]


def test_a_pid_circusd_no_longer_lists_is_forgotten_not_killed():
    replies = {'list': lambda name=None: {'status': 'ok', 'watchers': ['web'],
                                          'pids': [41] if name is None else []}}
    with scripted_dog(replies) as s:
        s.feed('web', 'spawn', process_pid=41)
        s.elapse(0.2)
        assert s.no_command() and s.plugin.processes == {}


# -- under circusd ----------------------------------------------------------------------------

def watchdog_section(port, **options):
    section = {'use': 'circus_plugins.watchdog.WatchDog', 'port': port,
               'loop_rate': 0.3, 'max_count': 2}
    section.update(options)
    return section


def replaced(circusd, watcher, pid, count):
    """The watcher's pids once ``pid`` is gone and ``count`` processes run again."""
    pids = circusd.pids(watcher)
    return pid not in pids and len(pids) == count and pids


def test_kills_the_silent_process_only_and_circusd_replaces_it(start_circusd, tmp_path):
    port = udp_port()
    circusd = start_circusd(
        watchers={'beat': {'cmd': beat_cmd(port, tmp_path), 'numprocesses': 2}},
        plugins={'watchdog': watchdog_section(port)})
    plugin = wait_for(lambda: circusd.pids('plugin:watchdog'), what='the plugin')[0]
    wait_connected(plugin, circusd.pubsub_endpoint)
    first, other = wait_for(lambda: len(circusd.pids('beat')) == 2 and circusd.pids('beat'),
                            what='two beating processes')
    with EventRecorder(circusd.pubsub_endpoint) as events:
        silence(tmp_path, first)
        pids = wait_for(lambda: replaced(circusd, 'beat', first, 2), timeout=8,
                        what='the silent process to be killed and replaced')
        assert other in pids
        (new,) = set(pids) - {other}
        # The new process came by a spawn event, not by the discovery at start: it is
        # watched too.
        silence(tmp_path, new)
        pids = wait_for(lambda: replaced(circusd, 'beat', new, 2), timeout=8,
                        what='the second silent process to be killed and replaced')
        # other, found at start and beating all along, has outlived two kills of
        # processes watched after it: it is not killed.
        assert other in pids
        def kills():
            events.poll()
            return [topic for topic, _ in events.events if topic.endswith(b'.kill')]
        wait_for(lambda: len(kills()) >= 2, what='the kill events')
        assert kills() == [b'watcher.beat.kill'] * 2
    # The plugin's own watcher sends no heartbeat and was never killed.
    assert circusd.pids('plugin:watchdog') == [plugin]
    log = circusd.log()
    for pid in (first, new):
        assert 'beat: pid %d sent no heartbeat for' % pid in log
        assert "killed it (the watcher's stop signal)" in log
    assert 'pid %d sent' % other not in log


def test_stop_signal_graceful_timeout_and_watchers_regex(start_circusd, tmp_path):
    port = udp_port()
    circusd = start_circusd(
        watchers={'mute': {'cmd': beat_cmd(port, tmp_path, 'mute'),
                           'graceful_timeout': 30},
                  'unwatched': {'cmd': beat_cmd(port, tmp_path, 'mute')}},
        plugins={'watchdog': watchdog_section(port, watchers_regex='^mu',
                                              watchers_stop_signal='USR1',
                                              watchers_graceful_timeout=0.5)})
    mute = wait_for(lambda: circusd.pids('mute'), what='the mute process')[0]
    unwatched = wait_for(lambda: circusd.pids('unwatched'), what='the unwatched one')[0]
    # heartbeat.py survives SIGUSR1: circusd kills it after the plugin's graceful
    # timeout (0.5 s), not the watcher's (30 s).
    wait_for(lambda: replaced(circusd, 'mute', mute, 1), timeout=8,
             what='the mute process to be killed and replaced')
    with open(os.path.join(str(tmp_path), '%d.signal' % mute)) as received:
        assert received.read().split() == [str(int(signal.SIGUSR1))]
    assert circusd.pids('unwatched') == [unwatched]
    assert 'killed it (signal SIGUSR1)' in circusd.log()


def test_runs_from_the_command_line(start_circusd, tmp_path):
    port = udp_port()
    circusd = start_circusd(
        watchers={'beat': {'cmd': beat_cmd(port, tmp_path), 'numprocesses': 2}})
    first, other = wait_for(lambda: len(circusd.pids('beat')) == 2 and circusd.pids('beat'),
                            what='two beating processes')
    with PluginProcess('circus_plugins.watchdog.WatchDog', circusd,
                       config={'port': port, 'loop_rate': '0.3', 'max_count': '2'}) as cli:
        # The processes were there before the plugin: it finds them at start.
        wait_for(lambda: 'watching 2 processes' in cli.log(), timeout=8,
                 what='the plugin to find the processes')
        silence(tmp_path, first)
        pids = wait_for(lambda: replaced(circusd, 'beat', first, 2), timeout=8,
                        what='the silent process to be killed and replaced')
        assert other in pids
        cli.stop(timeout=8)
    assert cli.returncode == 0
    assert 'beat: pid %d sent no heartbeat for' % first in cli.log()
    assert 'Stopping' in cli.log()


def test_the_command_line_reports_a_port_in_use():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(('127.0.0.1', 0))
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, '-m', 'circus_plugins', '--endpoint', 'tcp://127.0.0.1:1',
             '--pubsub', 'tcp://127.0.0.1:2', '--config', 'port:%d' % port,
             'circus_plugins.watchdog.WatchDog'],
            capture_output=True, text=True, timeout=8)
    assert done.returncode == 1
    assert 'cannot listen on UDP 127.0.0.1:%d (options ip, port)' % port in done.stderr
    assert 'Traceback' not in done.stderr
