"""The command reloader: which files a command runs, and restarts under a real circusd."""
import json
import logging
import os
import queue
import sys
import time

import pytest

from circus_plugins import ConfigError
from circus_plugins.command_reloader import (CommandReloader, UnresolvedCommand,
                                             command_files)
from circus_plugins.testing import EventRecorder, PluginProcess, wait_for

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


class Scripted:
    """A CommandReloader whose calls go to a script of watchers instead of circusd."""

    def __init__(self, watchers):
        self.plugin = CommandReloader('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 5.0,
                                      loop_rate='0.02')
        self.watchers = watchers  # {name: options}
        self.looks = 0
        self.gets = set()
        self.commands = queue.Queue()

        async def call_async(command, **props):
            if command == 'list':
                self.looks += 1
                return {'status': 'ok', 'watchers': sorted(self.watchers)}
            if command == 'get':
                self.gets.add(props['name'])
                if props['name'] not in self.watchers:
                    return {'status': 'error', 'reason': 'program %s not found'
                            % props['name'], 'errno': 3}
                return {'status': 'ok', 'options': dict(self.watchers[props['name']])}
            if command == 'status':
                return {'status': 'active'}
            self.commands.put((command, props))
            return {'status': 'ok'}
        self.plugin.call_async = call_async

    def looked(self):
        """Wait until a whole look has run after this call."""
        start = self.looks
        wait_for(lambda: self.looks >= start + 2, what='the plugin to look')

    def no_command(self):
        self.looked()
        return self.commands.empty()

    def __enter__(self):
        self.plugin.start_background()
        return self

    def __exit__(self, *exc_info):
        self.plugin.stop()


def test_plugins_skipped_removed_watchers_forgotten_missing_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='circus_plugins')
    mine, web = make_script(tmp_path / 'mine.sh'), make_script(tmp_path / 'web.sh')
    with Scripted({'plugin:me': {'cmd': mine}, 'web': {'cmd': web}}) as s:
        s.looked()
        assert s.gets == {'web'} and list(s.plugin.watches) == ['web']
        touch_later(mine)
        assert s.no_command()

        # (the script is replaced, never changed: the plugin thread iterates on it)
        s.watchers = {'plugin:me': {'cmd': mine}}
        s.looked()
        assert s.plugin.watches == {}
        touch_later(web)  # while it is gone: back, it is new, not changed
        s.watchers = {'plugin:me': {'cmd': mine}, 'web': {'cmd': web}}
        assert s.no_command()

        os.rename(web, web + '.away')
        for _ in range(3):
            s.looked()
        missing = [r for r in caplog.records if 'is missing' in r.getMessage()]
        assert len(missing) == 1 and missing[0].levelno == logging.WARNING
        assert s.commands.empty() and s.plugin.running

        os.rename(web + '.away', web)
        touch_later(web)
        assert s.commands.get(timeout=5) == ('restart', {'name': 'web', 'match': 'simple',
                                                         'busy_retry': 30.0})
        assert s.no_command()


def test_a_script_run_by_an_interpreter_is_watched(tmp_path):
    script = tmp_path / 'app.py'
    script.write_text('import time\ntime.sleep(1000)\n')
    cmd = '%s -u app.py' % sys.executable
    with Scripted({'app': {'cmd': cmd, 'working_dir': str(tmp_path)}}) as s:
        s.looked()
        assert len(s.plugin.watches['app'].stamps) == 2
        touch_later(str(script))
        assert s.commands.get(timeout=5)[0] == 'restart'


def test_events_older_than_the_change_do_not_hide_it(tmp_path):
    web = make_script(tmp_path / 'web.sh')
    with Scripted({'web': {'cmd': web}}) as s:
        s.looked()
        for action in ('updated', 'start'):  # say, circusctl set web numprocesses 2
            topic = ('watcher.web.%s' % action).encode()
            message = json.dumps({'time': time.time()}).encode()
            s.plugin.loop.add_callback(s.plugin.handle_recv, (topic, message))
        touch_later(web)  # changed after those events
        assert s.commands.get(timeout=5)[0] == 'restart'


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


def test_a_touched_script_restarts_its_watcher_and_nothing_else(start_circusd, tmp_path):
    scripts = {name: make_script(tmp_path / ('%s.sh' % name))
               for name in ('touched', 'untouched', 'fake')}
    circusd = reloader_circusd(start_circusd, tmp_path, {
        'touched': {'cmd': scripts['touched']},
        'untouched': {'cmd': scripts['untouched']},
        # not a plugin, but named like one: the reloader leaves it alone all the same
        'plugin:fake': {'cmd': scripts['fake']}})
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.sync(circusd, 'untouched')
        wait_for(lambda: len(circusd.pids('untouched')) == 1, what='the sync to end')
        before = {name: circusd.pids(name)
                  for name in ('touched', 'untouched', 'plugin:fake', 'plugin:reloader')}
        assert all(before.values())
        touch_later(scripts['touched'])
        touch_later(scripts['fake'])
        after = wait_for(lambda: circusd.pids('touched') not in ([], before['touched'])
                         and circusd.pids('touched'), timeout=8, what='a restart')
        events.poll()
        quiet = events.listen(1.5)  # 7 looks: no other restart may come
        # (the restart's own start event may come after the new process)
        assert [topic for topic, _ in quiet if topic != b'watcher.touched.start'] == []
        assert circusd.pids('touched') == after
        for name in ('untouched', 'plugin:fake', 'plugin:reloader'):
            assert circusd.pids(name) == before[name], name
    log = wait_for(lambda: 'touched: %s changed: restarted' % scripts['touched'] in
                   circusd.log() and circusd.log(), what='the restart to be logged')
    assert log.count('touched: %s changed: restarted' % scripts['touched']) == 1
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

    # circusd restarts a watcher whose cmd is set; the reloader must not do it again
    first = circusd.pids('web')
    with EventRecorder(circusd.pubsub_endpoint) as events:
        reply = circusd.call('set', name='web', options={'cmd': other})
        assert reply['status'] == 'ok'
        wait_for(lambda: 'web: %s changed: circusd restarts it itself' % other
                 in circusd.log(),
                 what='the reloader to see the new command')
        second = wait_for(lambda: circusd.pids('web') not in ([], first) and
                          circusd.pids('web'), what="circusd's reload")
        events.listen(1.2)
        assert circusd.pids('web') == second
    assert 'web: %s changed: restarted' % other not in circusd.log()


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
    web = make_script(tmp_path / 'web.sh')
    circusd = reloader_circusd(start_circusd, tmp_path, {'web': {'cmd': web}})
    first = circusd.pids('web')
    os.unlink(web)  # the running process does not mind
    wait_for(lambda: 'web: %s is missing' % web in circusd.log(), what='the warning')
    with EventRecorder(circusd.pubsub_endpoint) as events:
        events.listen(1.0)  # 5 more looks
    assert circusd.log().count('is missing') == 1
    assert circusd.pids('web') == first and circusd.pids('plugin:reloader')
    make_script(tmp_path / 'web.sh', SCRIPT + '# new release\n')
    touch_later(web)
    wait_for(lambda: circusd.pids('web') not in ([], first), timeout=8, what='a restart')
    wait_for(lambda: 'web: %s changed: restarted' % web in circusd.log(),
             what='the restart to be logged')


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
