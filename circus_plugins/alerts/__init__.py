"""Alerts by e-mail and chat webhooks about watchers in trouble, without storms.

:class:`Alerts` watches circusd's events and the events of the plugins running beside it,
and tells people when a watcher is in trouble:

* a process **crashed** (it died by itself with a non-zero status or a signal; what
  circusd ended is no crash, see :class:`~circus_plugins.events.Exits`): its pid, exit
  code or signal, how long it ran, and the last lines it wrote where circusd writes the
  watcher's stdout or stderr to a file;
* what other plugins did to it, when they run in the same process (a
  :class:`~circus_plugins.host.PluginHost`) or publish their events where this plugin
  listens (``events_subscribe``): Flapping's ``flapping`` and ``flapping_giveup``, the
  watchdog's kills, the observers' and the resource watcher's restarts;
* circusd **stopped** the watcher by itself (a process crashed and could not be spawned
  again);
* the watcher **recovered**: it has run ``recovery_after`` seconds with no new problem.

An operator's ``stop``, ``restart``, ``decr`` or ``reloadconfig`` and circusd's own
shutdown are not alerted. Storms are folded by :class:`~circus_plugins.alerts._grouping.Grouper`
(``group_wait``, ``group_interval``, ``repeat_interval``, ``max_events``); messages go
out through one :class:`~circus_plugins.alerts._outbox.Outbox` per destination (an SMTP server,
each webhook), retried in order, so that a dead mail server costs nothing but a delay.

A watcher is silenced by its own option ``alerts.mute`` in circus.ini: ``true``, or a
date and time (``2026-12-24T18:00``, local time unless an offset is given) until which
it is muted.
"""
import asyncio
import datetime
import json
import re
import socket
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config import MAX_COUNT, MAX_SECONDS, to_actions, to_bool, to_matcher
from ..errors import ConfigError
from ..events import CRASH, EXIT, Exits, read_event, shorten
from ..plugin import CircusPlugin
from ._alert_text import KINDS, mail_for, notice_for, notice_for_many
from ._grouping import Grouper, Item
from ._outbox import Outbox
from ._smtp import SmtpSender
from ._tail import tail
from ._webhook import FORMATS, Notice, Webhook

__all__ = ['Alerts', 'DEFAULT_EVENTS']

#: The kinds alerted on by default: every problem (not clean exits, nor the command
#: reloader's restarts, which follow a deployment).
DEFAULT_EVENTS = tuple(kind for kind in KINDS if kind not in ('exit', 'command_reload'))
#: Seconds a watcher's options, read from circusd, are trusted before being read again.
_FRESH = 10.0
#: Watchers and, per watcher, spawned pids remembered at most.
_MOST_WATCHERS = 4096
_MOST_PIDS = 4096
_NO_FILE = "circusd does not write this watcher's stdout or stderr to a file"


def _shown(value: Any, most: int = 200) -> str:
    """A plugin-made event's field as an alert shows it: text, cut to ``most``."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= most else text[:most - 1] + '\u2026'


def _mute_until(value: Any) -> Optional[float]:
    """``alerts.mute``: ``None`` (not muted), ``inf`` (muted) or until when, in seconds
    since the epoch. :exc:`ValueError` for anything else."""
    try:
        return float('inf') if to_bool(value, 'alerts.mute') else None
    except ConfigError:
        pass
    try:
        return datetime.datetime.fromisoformat(str(value).strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError('%r is neither true/false nor a date and time' % (value,)) from None


class _Watcher:
    """What the plugin knows of one watcher."""

    def __init__(self) -> None:
        self.spawned: Dict[int, float] = {}   # pid -> when spawned (epoch seconds)
        self.streams: Optional[List[Tuple[str, str]]] = None  # (stream, path); None: unread
        self.note = _NO_FILE                  # why there is no output to show
        self.read_at = -float('inf')          # loop time its options were last read
        self.reading: Optional['asyncio.Future[None]'] = None
        self.waiting: Optional[Dict[str, Any]] = None  # a crash's facts awaiting output
        self.unspawned = False                # a crash reaped, nothing spawned since
        self.muted = False                    # muted by its alerts.mute


class Alerts(CircusPlugin):
    """Sends grouped alerts about crashing, flapping and stopped watchers by SMTP and to
    chat webhooks. Every option is described in the plugin's documentation page."""

    name = 'alerts'

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        o = self.option
        self.watchers: Callable[[str], bool] = o('watchers', '*', to_matcher)
        self.events = o('events', ' '.join(DEFAULT_EVENTS), to_actions)
        unknown = [k for k in self.events if k != '*' and k not in KINDS]
        if unknown:
            self.log.warning('events: %s: none of the kinds known here (%s); only plugin-'
                             'made events of that name will match', ', '.join(unknown),
                             ', '.join(KINDS))
        self.log_lines = o('log_lines', 20, int, minimum=0, maximum=10000)
        self.log_bytes = o('log_bytes', 16384, int, minimum=0, maximum=16 * 2 ** 20)
        self.hostname = o('hostname', socket.gethostname(), str)
        seconds = partial(o, kind=float, minimum=0, maximum=MAX_SECONDS)
        try:
            self.grouper = Grouper(
                group_wait=seconds('group_wait', 10.0),
                group_interval=seconds('group_interval', 300.0),
                repeat_interval=seconds('repeat_interval', 4 * 3600.0),
                recovery_after=seconds('recovery_after', 60.0),
                max_events=o('max_events', 50, int, minimum=1, maximum=MAX_COUNT),
                down_kinds=frozenset({'flapping', 'flapping_giveup', 'stopped'}))
        except ValueError as exc:
            raise ConfigError('plugin %s: %s' % (self.name, exc)) from None
        #: More watchers than this with a message due together get one message
        #: between them (0: never).
        self.fold_watchers = o('fold_watchers', 3, int, minimum=0, maximum=MAX_COUNT)
        # Messages due this soon after the first are sent with it, to be folded: the
        # watchers an outage hits crash in the same reap pass, a few ms apart.
        self._slack = min(1.0, self.grouper.group_wait, self.grouper.group_interval / 4)
        self.queue_size = o('queue_size', 100, int, minimum=1, maximum=MAX_COUNT)
        self.retry_delay = o('retry_delay', 5.0, float, minimum=0.001, maximum=MAX_SECONDS)
        self.max_retry_delay = o('max_retry_delay', 300.0, float, minimum=self.retry_delay,
                                 maximum=MAX_SECONDS)
        #: ``(shown name, sender, secrets)`` of each destination.
        self.destinations: List[Tuple[str, Callable, Tuple[str, ...]]] = []
        self.smtp = self._smtp_sender()
        self.webhooks = self._webhooks()
        if not self.destinations:
            raise ConfigError('plugin %s: nowhere to send alerts: set smtp_host and mail_to, '
                              'or webhook_url' % self.name)
        self.exits = Exits()
        self._watchers: Dict[str, _Watcher] = {}
        self._outboxes: List[Outbox] = []
        self._timer: Any = None
        self._timer_at = float('inf')

    # -- options ---------------------------------------------------------------------------

    def _smtp_sender(self) -> Optional[SmtpSender]:
        c = self.config
        if not any(c.get(key) for key in ('smtp_host', 'mail_to', 'mail_from')):
            return None
        if not c.get('smtp_host') or not c.get('mail_to'):
            raise ConfigError('plugin %s: option %r: needed to send mail'
                              % (self.name, 'mail_to' if c.get('smtp_host') else 'smtp_host'))
        o = self.option
        try:
            smtp = SmtpSender(
                c['smtp_host'], o('smtp_port', 0, int, minimum=0, maximum=65535),
                o('smtp_tls', 'starttls'), user=o('smtp_user', ''),
                password=o('smtp_password', ''),
                mail_from=o('mail_from', 'circus@%s' % self.hostname),
                mail_to=c['mail_to'], subject_prefix=o('subject_prefix', '[circus]'),
                timeout=o('smtp_timeout', 30.0, float, minimum=0.001, maximum=MAX_SECONDS),
                verify=o('smtp_verify', True, bool), ca_file=o('smtp_ca_file', None),
                log=self.log, plugin=self.name)
        except ConfigError as exc:
            raise ConfigError('plugin %s: %s' % (self.name, exc)) from None

        async def send(notice: Notice, dropped: int) -> None:
            await smtp.send(*mail_for(notice, dropped))

        self.destinations.append(('mail to %s' % smtp.where, send, ()))
        return smtp

    def _webhooks(self) -> List[Webhook]:
        urls = self.option('webhook_url', '').split()
        formats = self.option('webhook_format', 'slack').replace(',', ' ').split()
        if len(formats) not in (1, len(urls)) and urls:
            raise ConfigError('plugin %s: option %r: %d formats for %d webhook_url'
                              % (self.name, 'webhook_format', len(formats), len(urls)))
        timeout = self.option('webhook_timeout', 30.0, float, minimum=0.001,
                              maximum=MAX_SECONDS)
        hooks = []
        for number, url in enumerate(urls):
            shape = formats[number if len(formats) > 1 else 0].lower()
            if shape not in FORMATS:
                raise ConfigError('plugin %s: option %r: %r is not one of %s'
                                  % (self.name, 'webhook_format', shape, ', '.join(FORMATS)))
            if not re.match(r'https?://[^/?#]+', url):
                raise ConfigError('plugin %s: option %r: %s is not an http:// or https:// '
                                  'URL' % (self.name, 'webhook_url', Webhook(url).shown_url))
            hook = Webhook(url, shape, connect_timeout=min(10.0, timeout),
                           request_timeout=timeout)
            self.destinations.append(('webhook %s' % hook.shown_url, hook.send,
                                      hook.secrets))
            hooks.append(hook)
        return hooks

    # -- life ------------------------------------------------------------------------------

    def handle_init(self) -> None:
        super().handle_init()
        self._outboxes = [
            Outbox(send, self.loop, size=self.queue_size, retry_delay=self.retry_delay,
                   max_retry_delay=self.max_retry_delay, name=shown, logger=self.log,
                   secrets=secrets)
            for shown, send, secrets in self.destinations]
        self.loop.add_callback(self._read_all)

    def handle_stop(self) -> None:
        for box in self._outboxes:
            box.close()
        super().handle_stop()

    async def _read_all(self) -> None:
        """Read every watcher's options: the output files and mutes are known before
        the first crash."""
        reply = await self.ask('list')
        for name in reply.get('watchers') or ():
            if isinstance(name, str) and self.watchers(name):
                self._refresh(name)

    # -- events ----------------------------------------------------------------------------

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, plugin_events=True)
        if event is None or not self.watchers(event.watcher):
            return
        w, action, now = event.watcher, event.action, self.loop.time()
        when = event.time() or time.time()
        if event.plugin is not None:
            if self._wanted(action):
                details = {_shown(k, 64): _shown(v) for k, v in event.fields.items()
                           if k not in ('plugin', 'time')}
                self.grouper.add(Item(w, action, now, {
                    'time': when, 'plugin': _shown(event.plugin, 64), 'details': details}))
        else:
            why = self.exits.see(event)
            if action in ('reap', 'stop'):
                self.log.debug('%s: %s %s %s', shorten(w), action, event.pid(), why or '')
            if action == 'reap':
                self._reaped(event, why, now, when)
            elif action == 'spawn':
                self._spawned(event, now, when)
            elif action == 'stop':
                self._stopped(w, now, when)
            elif action == 'start':
                self.grouper.resumed(w, now)
                self._refresh(w)  # a reloadconfig restarts what it changed: options too
            elif action in ('add', 'updated'):
                self._refresh(w)
            elif action == 'remove':
                self._watchers.pop(w, None)
                self.grouper.ended(w, now)
        self._schedule()

    def _wanted(self, kind: str) -> bool:
        return kind in self.events or '*' in self.events

    def _watcher(self, name: str) -> _Watcher:
        info = self._watchers.get(name)
        if info is None:
            while len(self._watchers) >= _MOST_WATCHERS:
                del self._watchers[next(iter(self._watchers))]
            info = self._watchers[name] = _Watcher()
        return info

    def _spawned(self, event, now: float, when: float) -> None:
        info = self._watcher(event.watcher)
        pid = event.pid()
        if pid is not None:
            if len(info.spawned) >= _MOST_PIDS:
                del info.spawned[next(iter(info.spawned))]
            info.spawned[pid] = when
        info.unspawned = False
        self.grouper.resumed(event.watcher, now)

    def _reaped(self, event, why: Optional[str], now: float, when: float) -> None:
        info = self._watcher(event.watcher)
        pid = event.pid()
        started = info.spawned.pop(pid, None) if pid is not None else None
        if why == CRASH:
            info.unspawned = True
        if why not in (CRASH, EXIT) or not self._wanted(why):
            return
        facts: Dict[str, Any] = {'time': when, 'pid': pid}
        if event.signum() is not None:
            facts['signal'] = event.signal()
        else:
            facts['exit_code'] = event.exit_code()
        if started is not None:
            facts['ran_for'] = max(0.0, when - started)
        if info.streams is None:
            info.waiting = facts  # filled once its options are read
        else:
            self._read_output(info, facts)
        if now - info.read_at > _FRESH:
            self._refresh(event.watcher)
        self.grouper.add(Item(event.watcher, why, now, facts))

    def _stopped(self, w: str, now: float, when: float) -> None:
        info = self._watchers.get(w)
        if info is not None and info.unspawned:
            # A crash, no spawn since, then a stop no one asked for: circusd could not
            # spawn the process again (max_retry failed spawns) and stopped the watcher.
            info.unspawned = False
            if self._wanted('stopped'):
                self.grouper.add(Item(w, 'stopped', now, {'time': when}))
        else:
            self.grouper.ended(w, now)

    # -- a watcher's options: output files and mute ----------------------------------------

    def _refresh(self, name: str) -> None:
        info = self._watcher(name)
        if info.reading is None:
            info.reading = asyncio.ensure_future(self._read_options(name, info))

    async def _read_options(self, name: str, info: _Watcher) -> None:
        try:
            reply = await self.ask('options', name=name)
            options = reply.get('options')
            if reply.get('status') == 'ok' and isinstance(options, dict):
                self._take_options(name, info, options)
            else:
                info.streams = []
                info.note = 'cannot read its options from circusd: %s' % shorten(
                    reply.get('reason'))
        except Exception:
            self.log.exception('%s: reading its options failed', shorten(name))
        finally:
            info.read_at = self.loop.time()
            info.reading = None
            if info.waiting is not None:
                facts, info.waiting = info.waiting, None
                self._read_output(info, facts)
            self._schedule()

    def _take_options(self, name: str, info: _Watcher, options: Dict[str, Any]) -> None:
        streams: List[Tuple[str, str]] = []
        for stream in ('stderr', 'stdout'):
            conf = options.get('%s_stream_conf' % stream)
            path = conf.get('filename') if isinstance(conf, dict) else None
            if isinstance(path, str) and path and path not in [p for _, p in streams]:
                streams.append((stream, path))
        info.streams, info.note = streams, _NO_FILE
        value = options.get('alerts.mute', False)
        try:
            until = _mute_until(value)
        except ValueError as exc:
            self.log.error('%s: option alerts.mute ignored: %s', shorten(name), exc)
            until = None
        if until is None:
            if info.muted:
                info.muted = False
                self.grouper.unmute(name)
                self.log.info('%s: alerts no longer muted', shorten(name))
        elif until > time.time():
            if not info.muted:
                self.log.info('%s: alerts muted (alerts.mute = %s)', shorten(name),
                              shorten(value))
            info.muted = True
            self.grouper.mute(name, self.loop.time() + (until - time.time()))

    def _read_output(self, info: _Watcher, facts: Dict[str, Any]) -> None:
        """Put the last lines of the watcher's output files into a crash's facts."""
        streams = info.streams or []
        if not streams:
            facts['output_note'] = info.note
            return
        lines, notes, sources = [], [], []
        for stream, path in streams:
            got, why = tail(path, self.log_lines, self.log_bytes // len(streams))
            if why:
                notes.append(why)
            elif got:
                if len(streams) > 1:
                    lines.append('==> %s <==' % stream)
                lines += got
                sources.append('%s %s' % (stream, path))
        if lines:
            facts['output'], facts['output_from'] = lines, ', '.join(sources)
        else:
            facts['output_note'] = '; '.join(notes) or 'nothing written to %s' % ', '.join(
                path for _, path in streams)

    # -- sending ---------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Set the timer for the grouper's next wake-up, if it is earlier."""
        now = self.loop.time()
        wake = self.grouper.next_wakeup(now)
        if wake is None or wake >= self._timer_at:
            return
        if self._timer is not None:
            self.loop.remove_timeout(self._timer)
        self._timer_at = wake
        self._timer = self.loop.call_at(max(wake, now), self._fire)

    async def _fire(self) -> None:
        self._timer, self._timer_at = None, float('inf')
        try:
            reading = [info.reading for info in self._watchers.values() if info.reading]
            if reading:  # a crash's output and a mute are due before its message
                await asyncio.wait(reading, timeout=self.call_timeout + 1)
            now, wall = self.loop.time(), time.time()
            notices = [notice_for(message, self.hostname, wall, now)
                       for message in self.grouper.due(now + self._slack)]
            if self.fold_watchers and len(notices) > self.fold_watchers:
                notices = [notice_for_many(notices, self.hostname)]
            for notice in notices:
                self.log.info('alert: %s', notice.title)
                for box in self._outboxes:
                    box.put(notice)
        except Exception:
            self.log.exception('alerts not sent')
        finally:
            self._schedule()
