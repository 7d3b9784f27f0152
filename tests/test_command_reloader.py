"""The command reloader: which files a command runs, and restarts under a real circusd."""
import logging
import os
import sys
import time

import pytest

from circus_plugins import ConfigError
from circus_plugins.command_reloader import (CommandReloader, UnresolvedCommand,
                                             command_files)
from circus_plugins.periodic import SAFETY_REFRESH
from circus_plugins.testing import CommandCounter, PluginProcess, ScriptedCircusd, wait_for

SCRIPT = '#!/bin/sh\nexec sleep 1000\n'
PLUGIN = 'circus_plugins.command_reloader.CommandReloader'


def make_script(path, text=SCRIPT):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def touch_later(path, seconds=10):
    """Give ``path`` a modification time ``seconds`` later than it has."""
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 10 ** 9))


def test_options():
    assert CommandReloader('e', 'p', 5.0).loop_rate == 1.0
    assert CommandReloader('e', 'p', 5.0, loop_rate='0.25').loop_rate == 0.25
    for bad in ('often', '0', '-1'):
        with pytest.raises(ConfigError, match='command_reloader.*loop_rate.*%s' % bad):
            CommandReloader('e', 'p', 5.0, loop_rate=bad)


@pytest.fixture
def bin_dir(tmp_path):
    """A directory with programs named like interpreters, for a PATH of its own."""
    directory = tmp_path / 'bin'
    directory.mkdir()
    for name in ('tool', 'python3.11', 'bash', 'node', 'env'):
        make_script(directory / name)
    os.symlink('python3.11', str(directory / 'python3'))
    return directory


@pytest.mark.parametrize('cmd, args, executable, expected', [
    ('tool --port 80', None, None, ('bin/tool', None)),
    ('./app.sh -v', None, None, ('srv/app.sh', None)),
    ('/opt/x/run', None, None, ('/opt/x/run', None)),
    ('python3 -u app.py --debug', None, None, ('bin/python3', 'srv/app.py')),
    ('python3', ['-W', 'error', 'app.py'], None, ('bin/python3', 'srv/error')),
    ('python3 -m http.server', None, None, ('bin/python3', None)),
    ('python3 -c "print(1)"', None, None, ('bin/python3', None)),
    ('bash -e ../jobs/run.sh', None, None, ('bin/bash', 'jobs/run.sh')),
    ('bash -ec "sleep 1"', None, None, ('bin/bash', None)),
    ('node -- server.js', None, None, ('bin/node', 'srv/server.js')),
    ('node --eval "1"', None, None, ('bin/node', None)),
    ('env -u HOME LANG=C python3 app.py', None, None, ('bin/python3', 'srv/app.py')),
    ('worker', 'app.py', 'python3', ('bin/python3', 'srv/app.py')),
    ('tool', 'app.py', None, ('bin/tool', None)),
])
def test_command_files(tmp_path, bin_dir, cmd, args, executable, expected):
    env = {'PATH': '%s:/nonexistent' % bin_dir}
    found = command_files(cmd, args, str(tmp_path / 'srv'), env, executable)

    def absolute(path):
        return path if path is None or path.startswith('/') else str(tmp_path / path)
    assert found == tuple(absolute(path) for path in expected)


def test_command_files_errors(tmp_path):
    # Without PATH in its environment, a watcher's program is looked for where
    # subprocess looks: /bin and /usr/bin.
    assert command_files('sleep 10', env={})[0] in ('/bin/sleep', '/usr/bin/sleep')
    for cmd, problem in (('no-such-program x', 'not on the PATH'),
                         ('run "unbalanced', 'cannot parse'), ('', 'empty')):
        with pytest.raises(UnresolvedCommand, match=problem):
            command_files(cmd, working_dir=str(tmp_path), env={'PATH': str(tmp_path)})


BUSY = {'status': 'error', 'errno': 5,
        'reason': 'arbiter is already running manage_watchers command'}


class Scripted(ScriptedCircusd):
    """A reloader looking every 0.02 s (each look a whole refresh), and a scripted circusd that runs ``watchers``
    ({name: options}: replace it to change them, the plugin thread iterates on it) and
    answers ``restart`` busy once. Only restarts are recorded."""

    def __init__(self, watchers, safety_refresh=0.0):
        plugin = CommandReloader('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                                 loop_rate='0.02')
        plugin.safety_refresh = safety_refresh  # 0: every look lists and reads them all
        replies = {'list': self.list, 'get': self.get, 'status': {'status': 'active'},
                   'restart': self.restart}
        super().__init__(plugin, replies, ignore=['list', 'get', 'status'])
        self.watchers = watchers
        self.looks = 0
        self.gets = set()
        self.asked = []  # the names of every get, in order
        self.busy = set()  # the watchers whose restart was refused once
        self.vanished = set()  # listed, but removed before the plugin asks about them

    def list(self):
        self.looks += 1
        return {'status': 'ok', 'watchers': sorted(set(self.watchers) | self.vanished)}

    def get(self, name, keys):
        self.gets.add(name)
        self.asked.append(name)
        if name not in self.watchers:
            return {'status': 'error', 'reason': 'program %s not found' % name, 'errno': 3}
        return {'status': 'ok', 'options': dict(self.watchers[name])}

    def restart(self, name, match):
        if name in self.busy:
            return {'status': 'ok'}
        self.busy.add(name)
        return BUSY

    def looked(self):
        """Wait until a whole look has run after this call."""
        start = self.looks
        wait_for(lambda: self.looks >= start + 2, what='the plugin to look')


RESTART = ('restart', {'name': 'web', 'match': 'simple'})


def test_plugins_skipped_removed_watchers_forgotten_missing_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    mine, web = make_script(tmp_path / 'mine.sh'), make_script(tmp_path / 'web.sh')
    with Scripted({'plugin:me': {'cmd': mine}, 'web': {'cmd': web}}) as s:
        s.looked()
        assert s.gets == {'web'} and list(s.plugin.watches) == ['web']
        touch_later(mine)
        s.looked()
        assert s.no_command()

        s.watchers = {'plugin:me': {'cmd': mine}}
        s.looked()
        assert s.plugin.watches == {}
        touch_later(web)  # while it is gone: back, it is new, not changed
        s.watchers = {'plugin:me': {'cmd': mine}, 'web': {'cmd': web}}
        s.looked()
        assert s.no_command()

        os.rename(web, web + '.away')
        for _ in range(3):
            s.looked()
        missing = [r for r in caplog.records if 'is missing' in r.getMessage()]
        assert len(missing) == 1 and missing[0].levelno == logging.WARNING
        assert s.no_command() and s.plugin.running

        os.rename(web + '.away', web)
        touch_later(web)
        assert s.next_command(timeout=5) == RESTART  # refused as busy, asked again
        s.looked()
        assert s.no_command() and s.busy == {'web'}
    assert 'web: %s changed: restarted' % web in caplog.text
    assert 'restart failed' not in caplog.text


def test_problems_are_said_once_each_and_again_after_they_went_away(tmp_path, caplog):
    web = make_script(tmp_path / 'web.sh')
    with Scripted({'web': {'cmd': 'no-such-program', 'env': {'PATH': str(tmp_path)}}}) as s:
        s.looked()
        s.looked()
        s.watchers = {'web': {'cmd': web}}  # found: the problem is gone
        s.looked()
        s.watchers = {'web': {'cmd': 'no-such-program', 'env': {'PATH': str(tmp_path)}}}
        s.looked()
        s.looked()
        s.replies['status'] = {'status': 'error', 'reason': 'no reply within 5 s'}
        s.watchers = {'web': {'cmd': web}}
        touch_later(web)
        s.looked()
        s.looked()
        assert s.no_command()  # tried again at each look, not restarted without a status
        s.replies['status'] = {'status': 'active'}
        assert s.next_command() == RESTART
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["web: cannot find its program: 'no-such-program' is not on the PATH "
                        "(%s)" % tmp_path] * 2 + [
        'web: cannot read its status: no reply within 5 s']


def test_a_watcher_removed_since_the_list_is_forgotten_quietly(tmp_path, caplog):
    with Scripted({'web': {'cmd': make_script(tmp_path / 'web.sh')}}) as s:
        s.vanished = {'gone'}
        s.looked()
        assert 'gone' in s.gets and list(s.plugin.watches) == ['web']
    assert 'gone' not in caplog.text


def test_a_script_run_by_an_interpreter_is_watched(tmp_path):
    script = tmp_path / 'app.py'
    script.write_text('import time\ntime.sleep(1000)\n')
    cmd = '%s -u app.py' % sys.executable
    with Scripted({'app': {'cmd': cmd, 'working_dir': str(tmp_path)}}) as s:
        s.looked()
        assert len(s.plugin.watches['app'].stamps) == 2
        touch_later(str(script))
        assert s.next_command(timeout=5) == ('restart', {'name': 'app', 'match': 'simple'})


def test_a_confirmed_reload_is_emitted_with_the_files_changed(tmp_path, collector):
    script = tmp_path / 'app.py'
    script.write_text('import time\ntime.sleep(1000)\n')
    cmd = '%s -u app.py' % sys.executable
    with Scripted({'app': {'cmd': cmd, 'working_dir': str(tmp_path)}}) as s:
        s.replies['restart'] = {'status': 'error', 'reason': 'no', 'errno': 3}
        s.looked()
        touch_later(str(script))
        assert s.next_command(timeout=5)[0] == 'restart'  # refused: nothing said
        s.looked()
        assert collector.none_yet()
        s.replies['restart'] = {'status': 'ok'}
        touch_later(str(script))
        assert s.next_command(timeout=5)[0] == 'restart'
    watcher, action, body = collector.next_event()
    assert (watcher, action, body['plugin']) == ('app', 'command_reload',
                                                 'command_reloader')
    assert body['files'] == [os.path.realpath(str(script))]
    assert collector.none_yet()


def test_events_older_than_the_change_do_not_hide_it(tmp_path):
    web = make_script(tmp_path / 'web.sh')
    with Scripted({'web': {'cmd': web}}) as s:
        s.looked()
        for action in ('updated', 'start'):  # say, circusctl set web numprocesses 2
            s.feed('web', action, time=time.time())
        touch_later(web)  # changed after those events
        assert s.next_command(timeout=5) == RESTART


def test_between_refreshes_it_asks_only_about_what_events_name(tmp_path):
    web, api = make_script(tmp_path / 'web.sh'), make_script(tmp_path / 'api.sh')
    with Scripted({'web': {'cmd': web}}, safety_refresh=SAFETY_REFRESH) as s:
        wait_for(lambda: s.asked == ['web'] and 'web' in s.plugin.watches,
                 what='the first look')
        s.elapse(0.2)  # ten looks: files are stat()ed, circusd is not asked
        assert (s.looks, s.asked) == (1, ['web'])
        touch_later(web)
        assert s.next_command(timeout=5) == RESTART  # seen without asking its options

        for action in ('spawn', 'updated', 'start', 'reload'):
            s.asked = []
            s.feed('web', action, process_pid=12, time=time.time())
            s.feed('web', action, process_pid=13, time=time.time())
            s.elapse(0.1)
            assert s.asked == ['web'], action  # one get for both events

        s.asked = []
        s.watchers = {'web': {'cmd': web}, 'api': {'cmd': api}}  # circusctl add
        s.feed('api', 'add', time=time.time())
        s.feed('plugin:other', 'add', time=time.time())
        wait_for(lambda: 'api' in s.plugin.watches and s.asked == ['api'],
                 what='the added watcher to be read')
        s.feed('api', 'remove', time=time.time())
        assert list(s.plugin.watches) == ['web']
        s.elapse(0.1)
        assert (s.looks, s.asked) == (1, ['api']) and s.no_command()


def reloader_circusd(start_circusd, tmp_path, watchers, **options):
    """A circusd running ``watchers`` ({name: options}) and the reloader, looking every
    0.2 s; returns once the reloader has seen every watcher."""
    circusd = start_circusd(
        watchers=watchers,
        plugins={'reloader': dict({'use': PLUGIN, 'loop_rate': '0.2'}, **options)})
    for name in watchers:
        if not name.startswith('plugin:'):
            wait_for(lambda: '%s: watching ' % name in circusd.log(), timeout=8,
                     what='the reloader to watch %s' % name)
    return circusd


def restarted(circusd, name, script):
    return circusd.log().count('%s: %s changed: restarted' % (name, script))


def whole_look(circusd, script):
    """Return once the reloader has made a whole look that began after this call: the
    ``zz`` watcher, last in circusd's (sorted) list, runs ``script`` and is restarted
    twice, and the second restart ends a look that began after the first one."""
    for _ in range(2):
        count = restarted(circusd, 'zz', script)
        touch_later(script)
        wait_for(lambda: restarted(circusd, 'zz', script) > count, timeout=8,
                 what='the reloader to restart zz')


def test_a_touched_script_restarts_its_watcher_and_nothing_else(start_circusd, tmp_path):
    scripts = {name: make_script(tmp_path / ('%s.sh' % name))
               for name in ('touched', 'untouched', 'fake', 'zz')}
    circusd = reloader_circusd(start_circusd, tmp_path, {
        'touched': {'cmd': scripts['touched']},
        'untouched': {'cmd': scripts['untouched']}, 'zz': {'cmd': scripts['zz']},
        # not a plugin, but named like one: the reloader leaves it alone all the same
        'plugin:fake': {'cmd': scripts['fake']}})
    before = {name: circusd.pids(name)
              for name in ('touched', 'untouched', 'plugin:fake', 'plugin:reloader')}
    assert all(before.values())
    touch_later(scripts['touched'])
    touch_later(scripts['fake'])
    wait_for(lambda: restarted(circusd, 'touched', scripts['touched']), timeout=8,
             what='the restart')
    after = wait_for(lambda: circusd.pids('touched') not in ([], before['touched'])
                     and circusd.pids('touched'), timeout=8, what='the new process')
    whole_look(circusd, scripts['zz'])  # no other restart may come
    assert restarted(circusd, 'touched', scripts['touched']) == 1
    assert circusd.pids('touched') == after
    for name in ('untouched', 'plugin:fake', 'plugin:reloader'):
        assert circusd.pids(name) == before[name], name
    log = circusd.log()
    assert 'plugin:' not in ''.join(line for line in log.splitlines() if 'watching' in line)


def test_stopped_watchers_and_option_changes_are_not_restarted(start_circusd, tmp_path):
    idle, web = make_script(tmp_path / 'idle.sh'), make_script(tmp_path / 'web.sh')
    other = make_script(tmp_path / 'other.sh')
    circusd = reloader_circusd(start_circusd, tmp_path, {
        'idle': {'cmd': idle, 'autostart': 'false'}, 'web': {'cmd': web}})
    touch_later(idle)
    wait_for(lambda: 'idle: %s changed: not restarted, the watcher is stopped' % idle
             in circusd.log(), what='the reloader to see the change')
    assert circusd.status('idle') == 'stopped'

    # circusd restarts a watcher whose cmd is set; the reloader must not do it again: its
    # decision, logged, is final for this change
    reply = circusd.call('set', name='web', options={'cmd': other})
    assert reply['status'] == 'ok'
    wait_for(lambda: 'web: %s changed: circusd restarts it itself' % other in circusd.log(),
             what='the reloader to see the new command')
    assert restarted(circusd, 'web', other) == 0


def test_a_restart_by_someone_else_after_the_change_is_enough(start_circusd, tmp_path):
    web = make_script(tmp_path / 'web.sh')
    # a look at start, the next one 3 s later: time for an operator to restart it
    circusd = reloader_circusd(start_circusd, tmp_path, {'web': {'cmd': web}},
                               loop_rate='3')
    first = circusd.pids('web')
    os.utime(web)  # a new version, now
    assert circusd.call('restart', name='web')['status'] == 'ok'
    second = wait_for(lambda: circusd.pids('web') not in ([], first) and
                      circusd.pids('web'), what="the operator's restart")
    wait_for(lambda: 'web: %s changed: circusd restarts it itself' % web in circusd.log(),
             timeout=8, what='the next look')
    assert circusd.pids('web') == second


def test_a_missing_program_is_logged_once_and_watched_again(start_circusd, tmp_path):
    web, zz = make_script(tmp_path / 'web.sh'), make_script(tmp_path / 'zz.sh')
    circusd = reloader_circusd(start_circusd, tmp_path, {'web': {'cmd': web},
                                                         'zz': {'cmd': zz}})
    first = circusd.pids('web')
    os.unlink(web)  # the running process does not mind
    wait_for(lambda: 'web: %s is missing' % web in circusd.log(), what='the warning')
    whole_look(circusd, zz)
    assert circusd.log().count('is missing') == 1
    assert circusd.pids('web') == first and circusd.pids('plugin:reloader')
    make_script(tmp_path / 'web.sh', SCRIPT + '# new release\n')
    touch_later(web)
    wait_for(lambda: circusd.pids('web') not in ([], first), timeout=8, what='a restart')
    wait_for(lambda: restarted(circusd, 'web', web), what='the restart to be logged')


def test_runs_from_circus_plugin(start_circusd, tmp_path):
    web = make_script(tmp_path / 'web.sh')
    circusd = start_circusd(watchers={'web': {'cmd': web}})
    log_path = tmp_path / 'plugin.log'

    def log():  # what --log-output writes, not the stderr of plugin.log()
        return log_path.read_text() if log_path.exists() else ''
    with PluginProcess(PLUGIN, circusd, config={'loop_rate': '0.2'},
                       args=['--log-output', str(log_path)]) as plugin:
        wait_for(lambda: 'web: watching %s' % web in log(), timeout=8,
                 what='the plugin to watch web')
        first = circusd.pids('web')
        touch_later(web)
        wait_for(lambda: circusd.pids('web') not in ([], first), timeout=8,
                 what='a restart')
        plugin.stop(timeout=8)
    assert plugin.returncode == 0
    wait_for(lambda: 'web: %s changed: restarted' % web in log(),
             what='the restart to be logged')
    assert log().rstrip().endswith('Stopping')


def test_with_circusd_it_asks_nothing_at_steady_state_and_follows_events(start_circusd,
                                                                         tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    web, late = make_script(tmp_path / 'web.sh'), make_script(tmp_path / 'late.sh')
    other = make_script(tmp_path / 'other.sh')
    circusd = start_circusd(watchers={'web': {'cmd': web}})
    with CommandCounter(circusd.endpoint) as counter:
        plugin = CommandReloader(counter.endpoint, circusd.pubsub_endpoint, 1.0,
                                 loop_rate='0.1')
        plugin.safety_refresh = 1e9  # its spread refresh is not what is counted here
        looks = [0]
        look_after = plugin.look_after

        async def counted():
            await look_after()
            looks[0] += 1
        plugin.look_after = counted

        def quiet(n):
            """Whether the next ``n`` looks send no request."""
            before, start = counter.snapshot(), looks[0]
            wait_for(lambda: looks[0] >= start + n, timeout=5, what='%d looks' % n)
            return counter.snapshot() == before

        def logged(text):
            wait_for(lambda: text in caplog.text, timeout=8, what=text)
        with plugin:
            logged('web: watching %s' % web)
            assert quiet(10) and counter.snapshot() == {'list': 1, 'get': 1}

            make_script(tmp_path / 'web.new', SCRIPT + '# new release\n')
            os.replace(str(tmp_path / 'web.new'), web)  # a new inode
            logged('web: %s changed: restarted' % web)

            circusd.call('add', name='late', cmd=late, start=True)
            logged('late: watching %s' % late)  # from the add event: no list
            assert counter.snapshot()['list'] == 1

            circusd.call('set', name='web', options={'cmd': other})  # updated
            logged('web: %s changed: circusd restarts it itself' % other)

            circusd.call('rm', name='late')
            wait_for(lambda: 'late' not in plugin.watches, what='late to be forgotten')
            wait_for(lambda: quiet(3), timeout=8, what='no more requests')
            counts = counter.snapshot()
    assert (counts['list'], counts['restart'], counts['status']) == (1, 1, 2), counts


def test_after_circusd_restarts_on_its_ports_it_reads_everything_again_at_once(
        start_circusd, tmp_path, caplog):
    # Events published while the SUB reconnects are lost: the socket monitor sees the
    # reconnection and the plugin lists and reads every watcher then, not at the slow
    # safety refresh (SAFETY_REFRESH seconds away).
    caplog.set_level(logging.INFO, logger='circus_plugins')
    web = make_script(tmp_path / 'web.sh')
    circusd = start_circusd(watchers={'web': {'cmd': web}})
    with CommandCounter(circusd.endpoint) as counter:
        plugin = CommandReloader(counter.endpoint, circusd.pubsub_endpoint, 1.0,
                                 loop_rate='0.1')
        with plugin:
            wait_for(lambda: 'web: watching' in caplog.text, what='the first look')
            assert counter.snapshot().get('list') == 1
            circusd.kill()
            circusd.start()
            restarted = time.monotonic()
            wait_for(lambda: counter.snapshot().get('list') == 2, timeout=4,
                     what='a list after the reconnection')
            assert time.monotonic() - restarted < 4
            assert "connected again to circusd's events" in caplog.text
