"""circus_plugins.testing: ScriptedCircusd, the fake that plugin authors test rules with, and
Circusd."""
import pytest

from circus_plugins import CallError, CircusPlugin
from circus_plugins.testing import ScriptedCircusd

NOWHERE = ('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 0.0)


class StopsOnReap(CircusPlugin):
    """Asks for the watcher's options, then stops it, at each reap."""

    def handle_recv(self, data):
        watcher, action, _ = self.split_data(data)
        if action == 'reap':
            self.loop.add_callback(self.react, watcher)
        elif action == 'boom':
            raise RuntimeError('boom')

    async def react(self, watcher):
        options = await self.ask('options', name=watcher)
        if options['status'] == 'ok' and options['options'].get('stoppable', True):
            await self.change_state('stop', name=watcher)


def test_commands_are_answered_recorded_and_settled():
    replies = {'options': lambda name: {'status': 'ok', 'options': {'stoppable': name != 'db'}}}
    with ScriptedCircusd(StopsOnReap(*NOWHERE), replies) as circusd:
        circusd.feed('web', 'reap', process_pid=12)
        assert circusd.next_command(timeout=0) == ('options', {'name': 'web'})
        assert circusd.next_command(timeout=0) == ('stop', {'name': 'web'})
        circusd.feed('db', 'reap', process_pid=13)
        assert circusd.next_command(timeout=0) == ('options', {'name': 'db'})
        assert circusd.no_command()
        assert circusd.escaped == []


def test_no_reply_and_escapes_are_seen():
    def no_reply(**props):
        raise CallError('no reply')
    with ScriptedCircusd(StopsOnReap(*NOWHERE), {'options': no_reply}) as circusd:
        circusd.feed('web', 'reap')
        assert circusd.next_command(timeout=0)[0] == 'options'
        assert circusd.no_command()  # ask() turned the CallError into an error reply
        circusd.feed('web', 'boom')
        assert [type(e) for e in circusd.escaped] == [RuntimeError]
        circusd.replies['options'] = {'status': 'ok'}  # react() fails in a coroutine
        circusd.feed('web', 'reap')
        assert 'KeyError' in circusd.escaped[1].getMessage() + str(circusd.escaped[1].exc_info)


def test_on_loop_raises_here():
    with ScriptedCircusd(StopsOnReap(*NOWHERE)) as circusd:
        with pytest.raises(ZeroDivisionError):
            circusd.on_loop(lambda: 1 / 0)


def test_busy_refusals_are_asked_again_and_ignored_commands_not_recorded():
    busy = {'status': 'error', 'errno': 5,
            'reason': 'arbiter is already running manage_watchers command'}
    answers = [busy, busy]

    def stop(name):
        return answers.pop(0) if answers else {'status': 'ok'}
    replies = {'stop': stop, 'options': {'status': 'ok', 'options': {}}}
    with ScriptedCircusd(StopsOnReap(*NOWHERE), replies, ignore=['options']) as circusd:
        circusd.feed('web', 'reap')
        assert circusd.next_command(timeout=0) == ('stop', {'name': 'web'})
        assert answers == [] and circusd.no_command()


def test_circusd_start_returns_once_its_watchers_are_started(start_circusd):
    """circusd answers commands before it has started its watchers; Circusd.start()
    returns only once it has, so that their start events are over."""
    watchers = {'w%d' % n: {'cmd': 'sleep 1000', 'numprocesses': 2} for n in range(6)}
    watchers['later'] = {'cmd': 'sleep 1000', 'autostart': False}
    circusd = start_circusd(watchers=watchers)
    statuses = circusd.call('status')['statuses']
    assert statuses == dict({name: 'active' for name in watchers}, later='stopped')
    assert all(len(circusd.pids(name)) == 2 for name in watchers if name != 'later')


def test_a_free_port_is_not_given_to_another_run_while_this_one_lasts():
    """A port is found free, then bound by its server a while later: a test run beside
    this one must not be given it meanwhile."""
    import subprocess
    import sys
    from circus_plugins.testing import free_port
    port = free_port()  # free, and nothing binds it here
    # The other run draws that port every time; it has to find another one.
    code = ('import random\nfrom circus_plugins import testing\n'
            'random.randint = lambda low, high: %d\nprint(testing.free_port())\n' % port)
    other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                           timeout=30)
    assert other.returncode == 0, other.stderr
    assert int(other.stdout) != port


def test_a_plugin_process_never_started_says_so(tmp_path):
    from circus_plugins.testing import PluginProcess
    plugin = PluginProcess('sample_plugins.Logger', endpoint=NOWHERE[0], pubsub=NOWHERE[1],
                           log_path=str(tmp_path / 'plugin.log'))
    for use in (plugin.stop, lambda: plugin.pid):
        with pytest.raises(RuntimeError, match=r'start\(\) was not called'):
            use()



def test_command_counter_relays_and_counts(circusd):
    import zmq
    from circus_plugins.testing import CommandCounter

    with CommandCounter(circusd.endpoint) as counter:
        context = zmq.Context()
        client = context.socket(zmq.DEALER)
        client.linger = 0
        client.connect(counter.endpoint)

        def call(command, **props):
            client.send_json({'id': command + str(props), 'command': command,
                              'properties': props})
            assert client.poll(5000), 'no reply through the relay'
            reply = client.recv_json()
            assert reply['id'] == command + str(props)
            return reply
        try:
            assert call('list')['watchers'] == ['sleeper']
            assert call('status', name='sleeper')['status'] == 'active'
            assert call('list', name='sleeper')['pids'] == circusd.pids('sleeper')
            client.send(b'not json')
        finally:
            client.close()
            context.term()
        assert counter.snapshot() == {'list': 2, 'status': 1, '?': 1}
        assert counter.total() == 4
