"""What an alert says: a :class:`~circus_plugins.alerts._grouping.Message` put into words.

:func:`notice_for` turns a message about a watcher into a
:class:`~circus_plugins.alerts._webhook.Notice` (a title, facts, one line per event, the last
output lines), which the webhook formats render; :func:`mail_for` writes the same notice
as a mail's subject and plain-text body. Items carry, in ``facts``: ``time`` (seconds
since the epoch, when it happened), and for a crash ``pid``, ``exit_code`` or
``signal``, ``ran_for`` (seconds), ``output`` (lines) with ``output_from`` or
``output_note``; for a plugin-made event ``plugin`` and ``details`` (a dict).
"""
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._grouping import Item, Message
from ._webhook import Notice, _dropped_line

__all__ = ['notice_for', 'mail_for', 'KINDS', 'duration']

#: Every kind the alerts plugin knows, worst first: what a message's title is about.
KINDS = ('flapping_giveup', 'stopped', 'flapping', 'crash', 'watchdog_kill',
         'resource_restart', 'http_restart', 'redis_restart', 'resource_signal',
         'command_reload', 'exit')

# What happened, after the watcher's name, for a title and an event line.
_SAID = {
    'flapping_giveup': 'stopped for good: it kept crashing (flapping)',
    'stopped': 'stopped by circusd: it could not start it again',
    'flapping': 'flapping: stopped, to be started again',
    'crash': 'crashed',
    'exit': 'exited',
    'watchdog_kill': 'killed by the watchdog: no heartbeat',
    'resource_restart': 'restarted by the resource watcher',
    'http_restart': 'restarted: its HTTP check failed',
    'redis_restart': 'restarted: Redis did not answer',
    'resource_signal': 'child process signalled by the resource watcher',
    'command_reload': 'restarted: its program changed',
}


def duration(seconds: Any) -> str:
    """``"0.4 s"``, ``"45 s"``, ``"3 min 20 s"``, ``"2 h 5 min"``, ``"3 d 4 h"``."""
    try:
        value = float(seconds)
    except (TypeError, ValueError, OverflowError):  # None, not a number, too big
        return 'unknown'
    if not math.isfinite(value):
        return 'unknown'
    seconds = max(0.0, value)
    whole = int(round(seconds))
    if seconds < 10:
        return '%.1f s' % seconds
    for size, unit, small, small_unit in ((86400, 'd', 3600, 'h'), (3600, 'h', 60, 'min'),
                                          (60, 'min', 1, 's')):
        if whole >= size:
            rest = (whole % size) // small
            return '%d %s' % (whole // size, unit) + (' %d %s' % (rest, small_unit)
                                                      if rest else '')
    return '%d s' % whole


def _clock(when: Any, date: bool = False) -> str:
    try:
        moment = time.localtime(float(when))
    except (TypeError, ValueError, OverflowError, OSError):
        return '--:--:--'
    return time.strftime('%Y-%m-%d %H:%M:%S %Z' if date else '%H:%M:%S', moment)


def _how_it_ended(facts: Dict[str, Any]) -> str:
    if facts.get('signal'):
        return 'killed by %s' % facts['signal']
    if facts.get('exit_code') is not None:
        return 'exit code %s' % facts['exit_code']
    return 'exit status unknown'


def _details(details: Any) -> str:
    if not isinstance(details, dict):
        return ''
    return ', '.join('%s=%s' % (key, value) for key, value in details.items())


def event_line(item: Item) -> str:
    """One line for one event: its time, what happened, the facts that matter."""
    facts = item.facts
    said = _SAID.get(item.kind, item.kind)
    line = '%s %s' % (_clock(facts.get('time')), said)
    if item.kind in ('crash', 'exit'):
        line += ': pid %s, %s' % (facts.get('pid'), _how_it_ended(facts))
        if facts.get('ran_for') is not None:
            line += ', ran %s' % duration(facts['ran_for'])
    elif facts.get('plugin'):
        extra = _details(facts.get('details'))
        line += ' (%s%s)' % (facts['plugin'], ': ' + extra if extra else '')
    return line


def _worst(kinds: Sequence[str]) -> str:
    rank = {kind: place for place, kind in enumerate(KINDS)}
    return min(kinds, key=lambda kind: rank.get(kind, len(KINDS))) if kinds else 'alert'


def _counts(counts: Dict[str, int]) -> str:
    return ', '.join('%d %s' % (number, kind) for kind, number in counts.items())


def _last_output(items: Sequence[Item]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The output lines of the latest crash that has some, and facts about them; else
    why the latest crash has none."""
    crashes = [item.facts for item in items if item.kind in ('crash', 'exit')]
    for facts in reversed(crashes):
        if facts.get('output'):
            return list(facts['output']), [('output of', 'pid %s, %s' % (
                facts.get('pid'), facts.get('output_from') or 'its stream'))]
    for facts in reversed(crashes):
        if facts.get('output_note'):
            return [], [('output', str(facts['output_note']))]
    return [], []


def notice_for(message: Message, host: str, now_wall: float, now_mono: float) -> Notice:
    """The notice saying ``message`` (about a watcher on ``host``). Monotonic times of
    the message are shown as wall-clock times: ``now_wall`` and ``now_mono`` are the
    same moment on both clocks."""
    w = message.watcher

    def wall(mono: Optional[float]) -> Optional[float]:
        return None if mono is None else now_wall - (now_mono - mono)

    facts: List[Tuple[str, str]] = [('host', host), ('watcher', w)]
    output: List[str] = []
    lines: List[str] = []
    if message.recovery:
        kind = 'recovered'
        title = '%s recovered' % w
        facts += [('down for', duration(message.down_for)),
                  ('since', _clock(wall(message.since), date=True)),
                  ('events', _counts(message.totals) or 'none')]
        text = 'It has run without a new problem since.'
    elif message.repeat:
        worst = _worst(message.kinds)
        kind = 'repeat'
        title = '%s still not resolved: %s' % (w, _SAID.get(worst, worst))
        facts += [('since', _clock(wall(message.since), date=True)),
                  ('events', _counts(message.totals))]
        text = 'Nothing new since the last alert; the problem is not resolved.'
    else:
        kind = _worst(message.kinds)
        number = message.counts.get(kind, 0)
        title = '%s %s' % (w, _SAID.get(kind, kind))
        if kind == 'crash' and number > 1:
            title += ' %d times' % number
        facts.append(('events', _counts(message.counts)))
        if message.first is not None and message.last != message.first:
            facts.append(('between', '%s and %s' % (_clock(wall(message.first)),
                                                   _clock(wall(message.last)))))
        if message.since != message.first:
            facts.append(('problem since', _clock(wall(message.since), date=True)))
        output, about = _last_output(message.items)
        facts += about
        lines = [event_line(item) for item in message.items]
        if message.left_out:
            lines.append('... and %d more event(s) not listed' % message.left_out)
        text = '\n'.join(lines)
    if message.muted:
        facts.append(('muted', '%d event(s) dropped while muted' % message.muted))
    return Notice(title=title, kind=kind, watcher=w, text=text, facts=facts,
                  output=output)


def mail_for(notice: Notice, dropped: int = 0) -> Tuple[str, str]:
    """``(subject, body)`` of the mail saying ``notice``."""
    body = [notice.title, '']
    width = max((len(name) for name, _ in notice.facts), default=0)
    body += ['%s: %s' % (name.ljust(width), value) for name, value in notice.facts]
    if notice.text:
        body += ['', notice.text]
    if notice.output:
        body += ['', 'Last output:'] + ['    ' + line for line in notice.output]
    if dropped:
        body += ['', '(%s)' % _dropped_line(dropped)]
    body += ['', '-- ', 'circus-plugins alerts']
    return notice.title, '\n'.join(body) + '\n'


def notice_for_many(notices: Sequence[Notice], host: str) -> Notice:
    """One notice for the notices about several watchers that are due together (a
    database outage makes every watcher that needs it crash at once): one line each,
    the worst kind first; their output is left out."""
    rank = {kind: place for place, kind in enumerate(KINDS + ('', 'repeat', 'recovered'))}
    order = sorted(notices, key=lambda n: rank.get(n.kind, len(KINDS)))  # stable
    worst = order[0].kind
    names = [str(n.watcher) for n in notices]
    shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
    lines = []
    for notice in order:
        events = dict(notice.facts).get('events')
        lines.append('%s%s' % (notice.title, ' (%s)' % events if events else ''))
    return Notice(title='%d watchers: %s' % (len(notices), shown), kind=worst, watcher=None,
                  text='\n'.join(lines), facts=[('host', host),
                                                ('watchers', str(len(notices)))])
