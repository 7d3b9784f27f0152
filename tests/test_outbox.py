"""The outbox: in order, retried with a growing delay or the receiver's, bounded, quiet."""
import asyncio
import logging

from circus_plugins.alerts._outbox import Outbox, SendError
from circus_plugins.testing import wait_for


class Sender:
    """A sender that records each attempt ``(loop time, message, dropped)`` and fails as
    :attr:`failures` says (``{message: [exceptions to raise, in turn]}``); while
    :attr:`gate` is clear, attempts wait.

    Tests look at :attr:`delivered` on the loop (``loop.call``): a message is in it
    before the outbox has finished with it (counted it sent, logged), in the same
    step of the loop."""

    def __init__(self, loop):
        self.loop = loop
        self.attempts = []
        self.delivered = []
        self.dropped = []
        self.failures = {}
        self.gate = None

    async def __call__(self, message, dropped):
        self.attempts.append((self.loop.time(), message, dropped))
        if self.gate is not None:
            await self.gate.wait()
        errors = self.failures.get(message)
        if errors:
            raise errors.pop(0)
        self.delivered.append(message)
        self.dropped.append(dropped)

    def times(self, message):
        return [t for t, m, _ in self.attempts if m == message]


def make(loop, sender, **options):
    options.setdefault('retry_delay', 0.05)
    return loop.call(lambda: Outbox(sender, loop.loop, **options))


def test_in_order_with_growing_delays(loop, caplog):
    caplog.set_level(logging.DEBUG, logger='circus_plugins.outbox')
    sender = Sender(loop.loop)
    sender.failures['a'] = [OSError('refused')] * 3
    outbox = make(loop, sender, retry_delay=0.05, max_retry_delay=0.12)
    for message in 'abc':
        loop.call(lambda: outbox.put(message))
    wait_for(lambda: loop.call(lambda: sender.delivered == list('abc')),
             what='a, b, c delivered')
    # The delays chosen, as logged: doubled, then capped. A loaded machine may wait
    # longer than that, never less.
    delays = [r.getMessage().rsplit('again in ', 1)[1] for r in caplog.records
              if 'sending failed' in r.getMessage()]
    assert delays == ['0.05 s', '0.1 s', '0.12 s']
    t = sender.times('a')
    gaps = [later - earlier for earlier, later in zip(t, t[1:])]
    assert len(gaps) == 3
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.12
    assert [m for _, m, _ in sender.attempts] == list('aaaabc')
    assert (outbox.sent, outbox.failures, len(outbox)) == (3, 3, 0)


def test_retry_after_is_honoured(loop):
    sender = Sender(loop.loop)
    sender.failures['a'] = [SendError('429 Too Many Requests', retry_after=0.3)]
    outbox = make(loop, sender, retry_delay=0.01)
    loop.call(lambda: outbox.put('a'))
    loop.call(lambda: outbox.put('b'))
    wait_for(lambda: loop.call(lambda: sender.delivered == ['a', 'b']), what='a, b delivered')
    first, second = sender.times('a')
    assert second - first >= 0.3
    assert sender.times('b')[0] >= second


def test_overflow_drops_the_oldest_and_says_how_many(loop):
    sender = Sender(loop.loop)
    sender.gate = loop.call(asyncio.Event)
    outbox = make(loop, sender, size=3)
    loop.call(lambda: outbox.put(1))
    wait_for(lambda: sender.attempts, what='1 being sent')
    loop.call(lambda: [outbox.put(n) for n in range(2, 7)])
    # 1 is being sent; 2 and 3 were dropped for 5 and 6
    assert loop.call(lambda: len(outbox)) == 4
    loop.call(sender.gate.set)
    wait_for(lambda: loop.call(lambda: len(sender.delivered) == 4), what='4 delivered')
    assert sender.delivered == [1, 4, 5, 6]
    assert sender.dropped == [0, 2, 0, 0]
    assert outbox.dropped_total == 2
    assert loop.call(outbox.take_dropped) == 0


def test_a_failed_message_is_dropped_when_the_queue_filled_up_meanwhile(loop):
    sender = Sender(loop.loop)
    sender.gate = loop.call(asyncio.Event)
    sender.failures[1] = [OSError('refused')]
    outbox = make(loop, sender, size=2)
    loop.call(lambda: outbox.put(1))
    wait_for(lambda: sender.attempts, what='1 being sent')
    loop.call(lambda: [outbox.put(n) for n in (2, 3)])
    loop.call(sender.gate.set)
    wait_for(lambda: loop.call(lambda: sender.delivered == [2, 3]), what='2, 3 delivered')
    assert sender.dropped == [1, 0]
    loop.call(lambda: outbox.put(4))
    wait_for(lambda: loop.call(lambda: sender.delivered == [2, 3, 4]), what='4 delivered')


def test_dropped_count_is_told_once_delivered(loop):
    sender = Sender(loop.loop)
    sender.gate = loop.call(asyncio.Event)
    sender.failures[2] = [OSError('refused')]
    outbox = make(loop, sender, size=1)
    loop.call(lambda: outbox.put(1))
    wait_for(lambda: sender.attempts, what='1 being sent')
    loop.call(lambda: [outbox.put(n) for n in (2, 3)])   # 2 dropped for 3
    loop.call(sender.gate.set)
    wait_for(lambda: loop.call(lambda: sender.delivered == [1, 3]), what='1, 3 delivered')
    assert sender.dropped == [0, 1]
    # take_dropped: for a caller that tells it itself
    loop.call(sender.gate.clear)
    loop.call(lambda: outbox.put(4))
    wait_for(lambda: len(sender.attempts) == 3, what='4 being sent')
    loop.call(lambda: [outbox.put(n) for n in (5, 6)])   # 5 dropped for 6
    assert loop.call(outbox.take_dropped) == 1
    loop.call(sender.gate.set)
    wait_for(lambda: loop.call(lambda: sender.delivered == [1, 3, 4, 6]),
             what='4, 6 delivered')
    assert sender.dropped == [0, 1, 0, 0]


def test_sender_exceptions_never_escape_and_are_logged_masked(loop, caplog):
    caplog.set_level(logging.DEBUG)
    token = 'Tok3nTok3nTok3n'
    password = 'hunter2hunter2'
    sender = Sender(loop.loop)
    sender.failures['a'] = [
        OSError('cannot reach https://hooks.example/x?token=%s' % token),
        RuntimeError('a bug with https://user:%s@smtp.example' % password),
        KeyError(password),
        OSError('cannot reach https://hooks.example/x?token=%s' % token)]
    outbox = make(loop, sender, retry_delay=0.01, max_retry_delay=0.02,
                  secrets=[password], name='test outbox')
    loop.call(lambda: outbox.put('a'))
    wait_for(lambda: loop.call(lambda: sender.delivered == ['a']), what='a delivered')
    assert not loop.escaped
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings, 'a failure should be logged'
    assert any('Traceback' in r.getMessage() for r in warnings
               if r.levelno == logging.ERROR)  # the bug: where it came from
    assert any('delivering again after 4' in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        shown = record.getMessage() + (record.exc_text or '')
        assert token not in shown and password not in shown, shown
    assert token not in caplog.text and password not in caplog.text


def test_a_repeated_failure_is_logged_once_above_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger='circus_plugins')
    sender = Sender(loop.loop)
    sender.failures['a'] = [OSError('refused')] * 5
    outbox = make(loop, sender, retry_delay=0.01, max_retry_delay=0.01)
    loop.call(lambda: outbox.put('a'))
    wait_for(lambda: loop.call(lambda: sender.delivered == ['a']), what='a delivered')
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]


def test_close_drops_what_is_left_once_and_stops(loop, caplog):
    caplog.set_level(logging.DEBUG, logger='circus_plugins')
    sender = Sender(loop.loop)
    sender.gate = loop.call(asyncio.Event)
    outbox = make(loop, sender)
    loop.call(lambda: [outbox.put(n) for n in (1, 2, 3)])
    wait_for(lambda: sender.attempts, what='1 being sent')
    outbox.close()                       # from another thread than the loop's
    outbox.close()
    wait_for(lambda: loop.call(lambda: outbox._worker is None), what='the worker to end')
    assert loop.call(lambda: outbox.put(4)) is False
    loop.call(sender.gate.set)
    assert loop.call(lambda: sender.delivered) == []
    closing = [r for r in caplog.records if 'closed with' in r.getMessage()]
    assert len(closing) == 1 and '3 message(s)' in closing[0].getMessage()
    assert len(sender.attempts) == 1


def test_close_cuts_a_retry_wait_short(loop):
    sender = Sender(loop.loop)
    sender.failures['a'] = [SendError('busy', retry_after=60)]
    outbox = make(loop, sender)
    loop.call(lambda: outbox.put('a'))
    wait_for(lambda: sender.attempts, what='a tried')
    loop.call(outbox.close)
    wait_for(lambda: loop.call(lambda: outbox._worker is None), timeout=2,
             what='the worker to end')
    assert outbox.dropped_total == 1


def test_send_timeout_counts_as_a_failure(loop):
    sender = Sender(loop.loop)
    sender.gate = loop.call(asyncio.Event)   # not set yet: attempts hang
    outbox = make(loop, sender, send_timeout=0.1, retry_delay=0.01)
    loop.call(lambda: outbox.put('a'))
    # A second attempt comes only once the first, hanging, was given up.
    wait_for(lambda: len(sender.attempts) >= 2, what='a tried again')
    loop.call(sender.gate.set)
    wait_for(lambda: loop.call(lambda: sender.delivered == ['a']), what='a delivered')
    assert outbox.failures == len(sender.attempts) - 1 >= 1
