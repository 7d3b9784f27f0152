"""EventLogger under a real circusd 0.19 and a stand-in event stream: the records, rotation,
logrotate, a SIGTERM after a burst, syslog over UDP, failures counted."""
import datetime
import json
import logging
import os
import re
import socket
import socketserver
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins.errors import ConfigError
from circus_plugins.event_logger import EventLogger
from circus_plugins.testing import (EventPublisher, PluginProcess, ScriptedCircusd,
                                    UdpReceiver, free_port, wait_for)
from conftest import MARKER, heard, plugin_running, running_beside, untrusted_events

NOWHERE = 'tcp://127.0.0.1:1'


def lines(path):
    """The records in ``path`` so far: a last line still being written (no line end
    yet), or a file being rotated away at this moment, is not there yet."""
    try:
        with open(path, encoding='utf-8') as log:
            text = log.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split('\n')[:-1]]


def logging_to(path, circusd, **options):
    return plugin_running(EventLogger, circusd, path=path, **options)


def test_a_watchers_stop_and_a_crash_with_every_field(start_circusd, tmp_path):
    path = str(tmp_path / 'events.log')
    circusd = start_circusd(watchers={'web': {'cmd': 'sleep 1000'}, 'marker': MARKER,
                                      'crasher': {'cmd': 'sh -c "exit 3"'}})
    with logging_to(path, circusd, hostname='web1') as plugin:
        heard(circusd, lambda: plugin.taken)
        # circusd answers commands before it has started its watchers
        [pid] = wait_for(lambda: circusd.pids('web'), what="web's process")
        before = time.time()
        circusd.call('stop', name='web')
        wait_for(lambda: any(r['watcher'] == 'web' and r['event'] == 'stop'
                             for r in lines(path)), what='the stop written')
        after = time.time()
        wait_for(lambda: any(r['event'] == 'reap' and r['watcher'] == 'crasher'
                             for r in lines(path)), what='a crash written')
    web = [r for r in lines(path) if r['watcher'] == 'web']
    *started, kill, reap, stop = web   # the start, if heard, then the stop
    assert [r['event'] for r in web] == [r['event'] for r in started] + [
        'kill', 'reap', 'stop'] and {r['event'] for r in started} <= {'spawn', 'start'}
    assert reap == {'time': reap['time'], 'host': 'web1', 'watcher': 'web', 'event': 'reap',
                    'pid': pid, 'wid': None, 'exit_code': -15, 'signal': 'SIGTERM',
                    'exit': 'stopped', 'plugin': None}
    assert kill['pid'] == pid and stop['pid'] is None
    when = datetime.datetime.fromisoformat(reap['time'])
    # circusd's own stamps, of moments between the command and the line seen
    assert when.tzinfo is not None and before <= when.timestamp() <= after
    assert when.timestamp() <= stop_time(stop) <= after
    crash = next(r for r in lines(path) if r['event'] == 'reap' and r['watcher'] == 'crasher')
    assert (crash['exit_code'], crash['exit'], crash['signal']) == (3, 'crash', None)


def stop_time(record):
    return datetime.datetime.fromisoformat(record['time']).timestamp()


def published(events, plugin, count, watcher='web'):
    """Publish ``count`` spawns of ``watcher`` once the plugin hears the publisher."""
    def hears():
        events.publish('probe', 'spawn', process_pid=1)
        return plugin.taken
    wait_for(hears, what='the subscription')
    for n in range(count):
        events.publish(watcher, 'spawn', process_pid=n + 1, time=1e9 + n)


def test_the_file_is_rotated_at_max_bytes(tmp_path):
    path = str(tmp_path / 'events.log')
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path, max_bytes='2000',
                             backup_count='2')
        with plugin:
            published(events, plugin, 100)
            wait_for(lambda: [r['pid'] for r in lines(path)][-1:] == [100],
                     what='the last record written')
    names = sorted(os.listdir(tmp_path))
    assert names == ['events.log', 'events.log.1', 'events.log.2']
    assert all(os.path.getsize(tmp_path / name) <= 2000 for name in names)
    kept = [r['pid'] for name in reversed(names) for r in lines(tmp_path / name)
            if r['watcher'] == 'web']
    assert kept == list(range(101 - len(kept), 101)) and len(kept) > 20


def test_a_file_moved_away_by_logrotate_is_opened_again(tmp_path):
    path = str(tmp_path / 'events.log')
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path)
        with plugin:
            published(events, plugin, 10)
            wait_for(lambda: len([r for r in lines(path) if r['watcher'] == 'web']) == 10)
            os.rename(path, path + '.1')                     # what logrotate does
            for n in range(10, 15):
                events.publish('web', 'spawn', process_pid=n + 1)
            wait_for(lambda: len(lines(path)) == 5, what='the new file')
    assert [r['pid'] for r in lines(path)] == [11, 12, 13, 14, 15]
    assert len([r for r in lines(path + '.1') if r['watcher'] == 'web']) == 10


def test_every_event_of_a_burst_is_written_through_a_sigterm(tmp_path):
    path = str(tmp_path / 'events.log')
    with EventPublisher() as events:
        process = PluginProcess('circus_plugins.event_logger.EventLogger', None,
                                config={'path': path}, endpoint=NOWHERE,
                                pubsub=events.endpoint, log_path=str(tmp_path / 'p.log'))
        with process:
            def hears():
                events.publish('probe', 'spawn', process_pid=1)
                return lines(path)
            wait_for(hears, timeout=8, what='the plugin to write')
            for n in range(5000):
                events.publish('web', 'spawn', process_pid=n + 1, time=1e9 + n)
            returncode = process.stop()              # SIGTERM right after the burst
    assert returncode == 0, process.log()
    written = [r['pid'] for r in lines(path) if r['watcher'] == 'web']
    assert written == list(range(1, 5001))


def test_records_reach_a_syslog_server_over_udp(tmp_path):
    with UdpReceiver() as syslog, EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0,
                             syslog='udp://127.0.0.1:%d' % syslog.port,
                             syslog_facility='local3')
        with plugin:
            published(events, plugin, 3)
            wait_for(lambda: syslog.receive() and False or len(
                [d for d in syslog.datagrams if b'"web"' in d]) == 3, what='3 datagrams')
    datagram = next(d for d in syslog.datagrams if b'"web"' in d)
    assert datagram.startswith(b'<158>circus: {')  # local3 (19) * 8 + info (6)
    assert datagram.endswith(b'}\x00')
    assert json.loads(datagram[len(b'<158>circus: '):-1])['event'] == 'spawn'


def test_standard_output_gets_the_same_lines_as_the_file(tmp_path, capsys):
    path = str(tmp_path / 'events.log')
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path, stdout='true')
        with plugin:
            published(events, plugin, 20)
            wait_for(lambda: web_pids(path)[-1:] == [20], what='the records written')
    with open(path, encoding='utf-8') as log:
        assert capsys.readouterr().out == log.read()
    assert web_pids(path) == list(range(1, 21))


def test_plugin_made_events_beside_it_name_their_plugin(start_circusd, tmp_path):
    path = str(tmp_path / 'events.log')
    circusd = start_circusd(watchers={'web': {'cmd': 'sleep 1000'}})
    with logging_to(path, circusd) as plugin, running_beside(circusd) as other:
        other.emit('web', 'flapping', retry_in=7.0, attempt=1)
        wait_for(lambda: plugin.taken, what='the event written')
    [record] = [r for r in lines(path) if r['event'] == 'flapping']
    assert record['plugin'] == 'other' and record['details'] == {'retry_in': 7.0,
                                                                 'attempt': 1}


def test_filters_keep_the_watchers_and_events_asked_for(tmp_path):
    path = str(tmp_path / 'events.log')
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path,
                             watchers='web-*', events='reap')
        with plugin:
            def hears():
                events.publish('web-0', 'reap', process_pid=1, exit_code=1)
                return plugin.taken
            wait_for(hears, what='the subscription')
            events.publish('db', 'reap', process_pid=2, exit_code=1)
            events.publish('web-1', 'spawn', process_pid=3)
            events.publish('web-1', 'reap', process_pid=3, exit_code=1)
            wait_for(lambda: ('web-1', 'reap') in [(r['watcher'], r['event'])
                                                   for r in lines(path)], what='the reap')
    assert {(r['watcher'], r['event']) for r in lines(path)} == {('web-0', 'reap'),
                                                                 ('web-1', 'reap')}


def test_a_path_that_cannot_be_written_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"^plugin event_logger: option 'path': cannot "
                                          r"write to '.*/missing/events.log': No such file"):
        EventLogger(NOWHERE, NOWHERE, 1.0, path=str(tmp_path / 'missing' / 'events.log'))


def test_a_full_disk_is_a_counted_loss_said_once_not_a_dead_plugin(caplog):
    caplog.set_level(logging.WARNING)
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path='/dev/full')
        with plugin:
            published(events, plugin, 50)
            wait_for(lambda: plugin.losses.count >= 51, what='the losses counted')
            assert plugin.running
    said = [r for r in caplog.records if 'event records lost' in r.getMessage()]
    assert len(said) == 1 and 'No space left on device' in said[0].getMessage()
    assert 'handle_stop failed' not in caplog.text     # the flush at close fails too
    assert 'event records were lost in all' in caplog.text


@pytest.mark.parametrize('config, says', [
    ({}, 'nowhere to write'),
    ({'stdout': 'true', 'syslog': 'udp://127.0.0.1'}, "option 'syslog'"),
    ({'stdout': 'true', 'syslog_facility': 'kitchen'}, 'is not a syslog facility'),
    ({'stdout': 'true', 'events': 'reap; rm -rf'}, "option 'events'"),
    ({'stdout': 'true', 'max_bytes': '-1'}, "option 'max_bytes'"),
])
def test_bad_options_are_refused_naming_them(config, says):
    with pytest.raises(ConfigError, match='^plugin event_logger: ') as raised:
        EventLogger(NOWHERE, NOWHERE, 1.0, **config)
    assert says in str(raised.value)


def test_untrusted_events_never_escape_and_every_line_is_json(tmp_path):
    path = str(tmp_path / 'events.log')
    plugin = EventLogger(NOWHERE, 'tcp://127.0.0.1:2', 1.0, path=path)
    with ScriptedCircusd(plugin) as circusd:
        @settings(max_examples=150, deadline=None)
        @given(st.lists(untrusted_events(['spawn', 'reap', 'kill', 'stop', 'flapping']),
                        max_size=6))
        def feed(given_events):
            circusd.feed_raw(*given_events)
        feed()
        assert circusd.escaped == []
    for record in lines(path):                       # json.loads of each line
        assert set(record) >= {'time', 'host', 'watcher', 'event', 'exit', 'plugin'}


def held_writes(monkeypatch):
    """Hold every write of the file sink until the returned gate is set: the records
    taken meanwhile wait in the queue, however fast the disk. Returns the gate and the
    list of the batches written (their numbers of lines)."""
    from circus_plugins.event_logger._sinks import FileSink
    write, gate, batches = FileSink.write, threading.Event(), []

    def held(sink, lines):
        gate.wait(8)  # bounded: a test that never opens it fails rather than hangs
        batches.append(len(lines))
        write(sink, lines)
    monkeypatch.setattr(FileSink, 'write', held)
    return gate, batches


def opened_when_the_stop_waits(monkeypatch, plugin, gate):
    """Set ``gate`` when, and only when, the plugin's stop waits for its writer."""
    thread = plugin._writer._thread
    join = thread.join

    def joined(*args, **kwargs):
        gate.set()
        return join(*args, **kwargs)
    monkeypatch.setattr(thread, 'join', joined)


def handled_so_far(events, caplog):
    """Return once the plugin has handled every event published so far: it says it
    skipped a malformed event published after them (the stream keeps its order)."""
    events.publish_raw(b'watcher.end-of-test', b'{}')
    wait_for(lambda: 'end-of-test' in caplog.text, what='the end marker')


def web_pids(path):
    return [r['pid'] for r in lines(path) if r['watcher'] == 'web']


def test_stop_returns_once_every_record_taken_is_written(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / 'events.log')
    gate, _ = held_writes(monkeypatch)
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path)
        with plugin:
            published(events, plugin, 300)
            handled_so_far(events, caplog)
            assert lines(path) == []                    # all of them still to write
            opened_when_the_stop_waits(monkeypatch, plugin, gate)
    assert web_pids(path) == list(range(1, 301))
    assert len(lines(path)) == plugin.taken


def test_the_records_waiting_are_written_at_once(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / 'events.log')
    gate, batches = held_writes(monkeypatch)
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path)
        with plugin:
            published(events, plugin, 200)         # the probes' write is held
            handled_so_far(events, caplog)
            probes = plugin.taken - 200
            gate.set()
            wait_for(lambda: web_pids(path)[-1:] == [200], what='the records written')
    assert web_pids(path) == list(range(1, 201))
    # the probes taken before the hold, then everything that waited: one write
    assert len(batches) == 2 and batches[1] >= 200 and sum(batches) == probes + 200


class TcpSyslog:
    """A syslog server over TCP on 127.0.0.1 keeping the NUL-ended messages it gets;
    :meth:`stop` closes it and its connections, :meth:`start` opens it again (same
    port)."""

    def __init__(self):
        self.port, self.messages, self._server = free_port(), [], None
        self.connections = []

    def start(self):
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                receiver.connections.append(self.request)
                data = b''
                while True:
                    try:
                        chunk = self.request.recv(65536)
                    except OSError:   # closed by stop()
                        return
                    if not chunk:
                        return
                    data += chunk
                    *done, data = data.split(b'\x00')
                    receiver.messages += done

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            block_on_close = False
        self._server = Server(('127.0.0.1', self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        connections, self.connections = self.connections, []
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def spawns(self):
        return [json.loads(m.split(b': ', 1)[1])['pid'] for m in self.messages
                if b'"web"' in m]


def test_tcp_syslog_away_for_a_while_loses_what_it_missed_and_gets_the_rest(caplog):
    syslog = TcpSyslog().start()
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0,
                             syslog='tcp://127.0.0.1:%d' % syslog.port)
        with plugin:
            published(events, plugin, 3)
            wait_for(lambda: syslog.spawns() == [1, 2, 3], what='3 records over TCP')
            syslog.stop()                                   # the server goes away
            for pid in range(4, 9):
                events.publish('web', 'spawn', process_pid=pid)
            wait_for(lambda: plugin.losses.count >= 1, what='a loss counted')
            syslog.start()                                  # and comes back
            for pid in range(100, 103):
                events.publish('web', 'spawn', process_pid=pid)
                wait_for(lambda: pid in syslog.spawns() or plugin.losses.count > 8,
                         what='record %d or its loss' % pid)
            wait_for(lambda: 102 in syslog.spawns(), what='the records after the return')
        syslog.stop()
    assert plugin.losses.count <= 5 + 3          # what it missed, and no more for ever
    assert 'event records lost: syslog failed' in caplog.text


def test_a_plugin_section_run_by_circusd_writes_the_record(start_circusd, tmp_path):
    path = str(tmp_path / 'events.log')
    start_circusd(watchers={'crasher': {'cmd': 'sh -c "exit 3"'}}, plugins={
        'event_logger': {'use': 'circus_plugins.event_logger.EventLogger', 'path': path}})
    wait_for(lambda: any(r['watcher'] == 'crasher' and r['exit'] == 'crash'
                         for r in lines(path)), timeout=8, what='a crash in the file')


def test_a_full_queue_at_stop_is_still_written_and_what_did_not_fit_counted(
        tmp_path, monkeypatch, caplog):
    from circus_plugins import event_logger
    monkeypatch.setattr(event_logger, 'QUEUE_SIZE', 50)
    path = str(tmp_path / 'events.log')
    gate, _ = held_writes(monkeypatch)                 # nothing written until the stop
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path)
        with plugin:
            published(events, plugin, 120)
            handled_so_far(events, caplog)
            assert plugin.taken == 50                  # the queue is full
            opened_when_the_stop_waits(monkeypatch, plugin, gate)
    assert 'handle_stop failed' not in caplog.text
    assert len(lines(path)) == plugin.taken == 50
    assert plugin.losses.count >= 70               # the 120 and the probes, less 50
    assert 'the queue (50 records waiting) failed' in caplog.text


@pytest.mark.parametrize('zone', ['UTC', 'Europe/Paris', 'America/St_Johns'])
def test_times_carry_the_offset_of_their_moment_across_summer_time(monkeypatch, zone):
    from circus_plugins.event_logger import _iso
    monkeypatch.setenv('TZ', zone)
    time.tzset()
    try:
        for when in (1711846799.5, 1711846800.5, 1729990799.25, 1729990800.75, 1e9,
                     1711846799.9999996, 1e9 + 0.0000005, 1e9 + 0.0000015):
            expected = datetime.datetime.fromtimestamp(when).astimezone()
            assert _iso(when) == expected.isoformat(timespec='microseconds')

        @settings(max_examples=300, deadline=None)
        @given(st.floats(0, 4e9))
        def as_datetime_says(when):                # rounding and offsets, any moment
            expected = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
            assert _iso(when) == expected.astimezone().isoformat(timespec='microseconds')
        as_datetime_says()
    finally:
        monkeypatch.undo()
        time.tzset()


# With what JSON or a template must escape: %, quotes, a line end, lone surrogates
# (which st.text never makes); but no high surrogate just before a low one: JSON would
# have read the two as one character, so no event holds them apart.
_NAMES = st.lists(st.one_of(st.characters(), st.sampled_from('%"\\\n\ud800\udc80')),
                  min_size=1, max_size=12).map(''.join).filter(
                      lambda name: not re.search('[\ud800-\udbff][\udc00-\udfff]', name))
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40),
                    st.floats(), _NAMES)


@settings(max_examples=200, deadline=None)
@given(host=_NAMES, watcher=_NAMES, action=st.sampled_from(['spawn', 'reap', 'kill', 'x%s']),
       fields=st.dictionaries(st.sampled_from(['process_pid', 'time', 'exit_code', 'wid',
                                               'x', '%s']), _VALUES),
       plugin=st.one_of(st.none(), _NAMES),
       why=st.sampled_from([None, 'crash', 'exit', 'stopped']))
def test_each_line_is_the_json_of_its_record(host, watcher, action, fields, plugin, why):
    import types
    from circus_plugins.events import Event
    logger = EventLogger(NOWHERE, NOWHERE, 1.0, stdout='true', hostname=host)
    event = Event(watcher, action, types.MappingProxyType(fields), plugin)
    for _ in range(2):                             # made, then from the template kept
        line = logger._line((event, why, 1e9 + 0.5))
        expected = json.dumps(logger.record(event, why, 1e9 + 0.5), ensure_ascii=False,
                              default=str, allow_nan=False)
        line.encode('utf-8')                       # every sink can write it
        assert json.loads(line) == json.loads(expected)
        if not any('\ud800' <= c <= '\udfff' for c in expected):
            assert line == expected                # else a lone surrogate is escaped


def test_a_lone_surrogate_is_written_as_its_escape(tmp_path):
    path = str(tmp_path / 'events.log')
    with EventPublisher() as events:
        plugin = EventLogger(NOWHERE, events.endpoint, 1.0, path=path,
                             hostname='web\udc80')   # from a command line, say
        with plugin:
            published(events, plugin, 1)
            wait_for(lambda: web_pids(path) == [1], what='the record')
    assert lines(path)[-1]['host'] == 'web\udc80'
    assert plugin.losses.count == 0
