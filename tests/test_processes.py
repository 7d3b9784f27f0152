"""_processes.Processes: the pids of watchers from one ``list``, then their events."""
import asyncio

from hypothesis import given, settings, strategies as st

from circus_plugins._processes import Processes
from circus_plugins.events import Event

ACTIONS = st.tuples(st.sampled_from(['spawn', 'reap', 'kill', 'stop']), st.integers(1, 6))


def event(action, pid, watcher='web'):
    return Event(watcher, action, {'process_pid': pid, 'time': 1.0})


def refresh(processes, lists, during=()):
    """Run :meth:`Processes.refresh` with ``list`` answering from ``lists`` (``{name:
    pids}``), the events ``during`` arriving while the question is out."""
    async def ask(command, name):
        assert command == 'list'
        for one in during:
            processes.see(one)
        return {'status': 'ok', 'pids': list(lists[name])}
    return asyncio.run(processes.refresh(ask))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(1, 6)), st.lists(ACTIONS, max_size=8), st.lists(ACTIONS, max_size=3))
def test_events_keep_the_pids_and_a_list_answered_amid_events_is_asked_again(
        first, later, amid):
    truth = set(first)

    def apply(actions):
        for action, pid in actions:
            if action == 'spawn':
                truth.add(pid)
            elif action in ('reap', 'kill'):
                truth.discard(pid)
        return [event(action, pid) for action, pid in actions]

    processes = Processes()
    processes.keep(['web'])
    assert processes.pids('web') is None
    assert list(refresh(processes, {'web': truth})) == ['web']
    for one in apply(later):
        processes.see(one)
    assert processes.pids('web') == truth
    assert refresh(processes, {'web': truth}) == {}               # nothing stale: not asked
    answered = set(truth)                                         # before the events amid
    processes.stale('web')
    refresh(processes, {'web': answered}, apply(amid))
    assert processes.pids('web') == truth                         # the events won
    followed = any(action != 'stop' for action, _ in amid)       # about processes
    assert list(refresh(processes, {'web': truth})) == (['web'] if followed else [])
    assert processes.pids('web') == truth


def test_a_process_found_ended_twice_without_its_event_makes_its_watcher_stale_once():
    processes = Processes()
    processes.keep(['web', 'db'])
    refresh(processes, {'web': [1, 2], 'db': [3]})
    processes.ended([('web', 2), ('db', 3)])
    processes.see(event('reap', 3, watcher='db'))         # db's came: nothing to ask
    processes.ended([('web', 2)])
    assert list(refresh(processes, {'web': [1, 2], 'db': []})) == ['web']
    processes.ended([('web', 2)])                          # circusd still lists it
    assert refresh(processes, {'web': [1, 2]}) == {}       # asked once, not again


def test_watchers_gone_are_forgotten_and_an_event_without_a_pid_makes_its_watcher_stale():
    processes = Processes()
    processes.keep(['web', 'db'])
    refresh(processes, {'web': [1], 'db': [2]})
    processes.see(Event('web', 'spawn', {'process_pid': 'x'}))
    processes.see(event('spawn', 9, watcher='unknown'))           # not kept: ignored
    processes.keep(['web'])
    assert processes.pids('db') is None and processes.pids('unknown') is None
    assert list(refresh(processes, {'web': [1, 3]})) == ['web']
    assert processes.pids('web') == {1, 3}
