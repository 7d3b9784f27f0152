"""Restarting watchers whose program changes on disk.

The plugin keeps each watcher's command options (from circusd's ``get``) and, every
``loop_rate`` seconds, works out the files each one runs (:func:`command_files`: the
program, found as circusd finds it, and the script of an interpreter) and stats them. When
one of them changes (its path, modification time or inode), the watcher is restarted,
unless it is stopped or circusd restarts it itself. A missing file is logged once and the
watcher skipped until the file is back. Plugins' own ``plugin:NAME`` watchers are left
alone.

circusd is asked only what its events do not say: new watchers come from ``add`` events,
and a watcher's options are read again (one ``get`` per look at most) after an event that
says they may have changed (``add``, ``updated``, ``start``, ``reload``, and ``spawn``:
a ``reloadconfig`` that changes a command publishes no ``updated``, but the new processes
spawn). Everything (``list``, then ``get`` of each) is read again at start, a moment after
the SUB socket reconnected (events were lost meanwhile) and after circusd did not answer;
and, as a last net, each watcher once every :data:`~circus_plugins.periodic.SAFETY_REFRESH`
seconds, spread over that time (:meth:`~circus_plugins.periodic.PeriodicPlugin.refresh_due`)::

    [plugin:command_reloader]
    use = circus_plugins.command_reloader.CommandReloader
    loop_rate = 2
"""
import logging
import os
import re
import shlex
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._log import SayOnce
from .events import read_event, skip_event
from .periodic import PeriodicPlugin

#: The watcher options the plugin reads to find a watcher's files.
_KEYS = ['cmd', 'args', 'working_dir', 'env', 'executable']
#: Programs whose first non-option argument is the script they run, with the letters of
#: their options after which the code comes from the command line instead (``-c CODE``).
_INTERPRETERS = [(re.compile(r'(python|pypy)[0-9.]*'), 'cm'),
                 (re.compile(r'(ba|da|z|k)?sh'), 'c'),
                 (re.compile(r'(perl|ruby|php)[0-9.]*|node(js)?'), 'er')]
#: Long options of interpreters that mean the same.
_INLINE_LONG = {'--eval', '--print', '--command'}
#: ``env`` options that take a value as the next word.
_ENV_VALUE_OPTIONS = {'-u', '--unset', '-C', '--chdir', '-S', '--split-string'}

#: Events after which a watcher's command options are read again.
#: The key of the ``list`` in refresh_due(): no watcher is named so.
_LIST = ''

_REREAD = frozenset(['add', 'updated', 'start', 'reload', 'spawn'])

#: What identifies the state of a file: real path, modification time (ns) and inode.
Stamp = Tuple[str, int, int]


class UnresolvedCommand(ValueError):
    """A watcher's command line names no program that can be found."""


def command_files(cmd: str, args: Union[str, Sequence[str], None] = None,
                  working_dir: Optional[str] = None,
                  env: Optional[Mapping[str, str]] = None,
                  executable: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """The program a watcher runs and, for an interpreter, its script.

    Takes the watcher's options as circusd has them. Returns absolute paths
    ``(program, script)``, ``script`` being ``None`` when there is none; the script path
    may not exist (it may be an option's value rather than a file).

    :raises UnresolvedCommand: the command line does not parse or its program cannot be
        found on the ``PATH``.
    """
    try:
        words = shlex.split(cmd or '')
        if isinstance(args, str):
            words += shlex.split(args)
        elif args:
            words += [str(arg) for arg in args]
    except ValueError as exc:
        raise UnresolvedCommand('cannot parse %r: %s' % (cmd, exc)) from None
    if not words and not executable:
        raise UnresolvedCommand('the command line is empty')
    working_dir = working_dir or os.getcwd()
    search_path = os.pathsep.join(os.get_exec_path(dict(env or {})))
    rest = words[1:]
    program = _find(executable or words[0], working_dir, search_path)
    if os.path.basename(program) == 'env':
        rest = _after_env_options(rest)
        if rest:
            program, rest = _find(rest[0], working_dir, search_path), rest[1:]
    script = None
    inline = _inline_letters(program)
    if inline is not None:
        script = _script_argument(rest, inline)
        if script is not None:
            script = os.path.normpath(os.path.join(working_dir, script))
    return program, script


def _find(word: str, working_dir: str, search_path: str) -> str:
    if os.sep in word:
        return os.path.normpath(os.path.join(working_dir, word))
    found = shutil.which(word, path=search_path)
    if found is None:
        raise UnresolvedCommand('%r is not on the PATH (%s)' % (word, search_path))
    return os.path.normpath(os.path.join(working_dir, found))


def _after_env_options(words: List[str]) -> List[str]:
    """What follows ``env``'s options and ``NAME=value`` settings."""
    index = 0
    while index < len(words):
        word = words[index]
        if word in _ENV_VALUE_OPTIONS:
            index += 2
        elif word.startswith('-') or '=' in word:
            index += 1
        else:
            break
    return words[index:]


def _inline_letters(program: str) -> Optional[str]:
    """The inline-code option letters if ``program`` is an interpreter, else None."""
    names = (os.path.basename(program), os.path.basename(os.path.realpath(program)))
    for pattern, letters in _INTERPRETERS:
        if any(pattern.fullmatch(name) for name in names):
            return letters
    return None


def _script_argument(words: List[str], inline: str) -> Optional[str]:
    """The first argument that is no option, unless the code is inline (``-c CODE``)."""
    for index, word in enumerate(words):
        if word == '--':
            return words[index + 1] if index + 1 < len(words) else None
        if word in _INLINE_LONG:
            return None
        if word[:1] == '-' and word[1:2] != '-' and any(c in inline for c in word[1:]):
            return None  # -c CODE, -m MODULE, and clusters like -ec or -um
        if not word.startswith('-'):
            return word
    return None


def stamp(path: str) -> Stamp:
    """``(real path, modification time in nanoseconds, inode)`` of ``path``.

    :raises OSError: the file cannot be read.
    """
    real = os.path.realpath(path)
    info = os.stat(real)
    return real, info.st_mtime_ns, info.st_ino


class _Watch:
    """What the plugin knows of one watcher."""

    def __init__(self) -> None:
        self.options: Optional[Mapping[str, Any]] = None  # from circusd's get
        self.stale = True     # options to be read again (an event said they may change)
        self.stamps: Optional[Tuple[Stamp, ...]] = None  # None: not seen yet
        self.updates = 0      # 'updated' events received (circusctl set)
        self.started = 0.0    # circusd's time of its last 'start' or 'reload' event
        self.seen = (0, 0.0)  # (updates, started) when the stamps were last recorded

    def news(self) -> Tuple[int, float]:
        return self.updates, self.started

    def done_by_circusd(self, stamps: Tuple[Stamp, ...]) -> bool:
        """Whether circusd has (re)started the watcher on the new files by itself.

        It does when its command options are set (then the paths change), and when it
        starts or reloads the watcher after the files changed.
        """
        started = self.seen[1]
        if self.news() == self.seen:
            return False
        if [s[0] for s in stamps] != [s[0] for s in self.stamps or ()]:
            return True
        newest = max(s[1] for s in stamps if s not in (self.stamps or ()))
        return self.started > started and newest <= self.started * 1e9


class CommandReloader(PeriodicPlugin):
    """Restarts a watcher when the program (or script) it runs changes on disk.

    Option: ``loop_rate``, seconds between two looks (default 1; a fraction is fine).
    """

    name = 'command_reloader'
    default_loop_rate = 1.0
    look_at_start = True  # the first look records what runs now

    def __init__(self, endpoint: str, pubsub_endpoint: str, check_delay: float,
                 ssh_server: Optional[str] = None, **config: Any) -> None:
        super().__init__(endpoint, pubsub_endpoint, check_delay, ssh_server, **config)
        #: The watchers known, by name (plugin thread only).
        self.watches: Dict[str, _Watch] = {}
        self._problems = SayOnce(self.log)  # by watcher: each logged once, until it is gone

    def handle_recv(self, data: Tuple[bytes, bytes]) -> None:
        event = read_event(self.log, data, fields=('start', 'reload'))
        if event is None or event.watcher.startswith('plugin:'):
            return
        if event.action == 'remove':
            self._forget(event.watcher)
            return
        if event.action not in _REREAD:
            return
        watch = self.watches.get(event.watcher)
        if watch is None:  # added (or its 'add' lost): asked about at the next look
            watch = self.watches[event.watcher] = _Watch()
        watch.stale = True
        if event.action == 'updated':
            watch.updates += 1
        elif event.action in ('start', 'reload'):
            now = time.time()
            when = event.time() if 'time' in event.fields else now
            if when is None:
                skip_event(self.log, event, 'time')
                return
            # No start is in the future: a stamp from there (junk, or a clock ahead of
            # ours) would make every later change look restarted by circusd already.
            watch.started = max(watch.started, min(when, now))

    async def look_after(self) -> None:
        """Look at every watcher once; restart those whose files changed. circusd is
        asked only about watchers that events said may have changed, and about each
        of them once every :attr:`safety_refresh` seconds, spread over that time (and
        all of them at start, after a reconnection and after circusd did not answer);
        its watchers are listed once in that period too (the name ``''``, no
        watcher's, stands for the ``list``)."""
        due = self.refresh_due([_LIST] + list(self.watches), time.monotonic())
        if _LIST in due and not await self._refresh():
            self.refresh_everything()  # events may have been missed meanwhile
            return
        for name in due:
            watch = self.watches.get(name)
            if watch is not None:
                watch.stale = True
        for name, watch in list(self.watches.items()):
            if self.watches.get(name) is watch:  # not removed meanwhile
                await self._look_at(name, watch)

    async def _refresh(self) -> bool:
        """List the watchers: forget those gone, mark those new to be read; False
        (logged) if circusd does not tell them."""
        reply = await self.ask('list')
        listed = reply.get('watchers')
        if reply.get('status') != 'ok' or not isinstance(listed, list):
            self.log.warning('cannot list the watchers: %s', reply.get('reason'))
            return False
        names = [name for name in listed
                 if isinstance(name, str) and not name.startswith('plugin:')]
        for gone in set(self.watches) - set(names):
            self._forget(gone)
        for name in names:
            self.watches.setdefault(name, _Watch())  # a new one is read (stale)
        return True

    def _forget(self, name: str) -> None:
        self.watches.pop(name, None)
        self._problems.forget(name)

    async def _look_at(self, name: str, watch: _Watch) -> None:
        news = watch.news()  # events received so far: the reply below reflects them
        if watch.stale or watch.options is None:
            watch.stale = False  # an event during the get marks it again
            reply = await self.ask('get', name=name, keys=_KEYS)
            options = reply.get('options')
            if reply.get('status') != 'ok' or not isinstance(options, Mapping):
                if 'not found' in str(reply.get('reason')):
                    self._forget(name)  # removed since the list or the event
                else:
                    watch.stale = True  # asked again at the next look
                    self._problem(name, 'cannot read its options: %s', reply.get('reason'))
                return
            watch.options = options
        stamps = self._stamps(name, watch, watch.options)
        if stamps is None:
            return
        previous = watch.stamps
        if previous is None:
            self.log.info('%s: watching %s', name, ', '.join(s[0] for s in stamps))
        elif stamps != previous:
            files = [s[0] for s in stamps if s not in previous]
            changed = ', '.join(files) or 'its command'
            reply = await self.ask('status', name=name)
            news = watch.news()  # events that came meanwhile may explain the change
            if reply.get('status') == 'error':  # tried again at the next look
                self._problem(name, 'cannot read its status: %s', reply.get('reason'))
                return
            if reply.get('status') in ('stopped', 'stopping'):
                self.log.info('%s: %s changed: not restarted, the watcher is %s',
                              name, changed, reply.get('status'))
            elif watch.done_by_circusd(stamps):
                self.log.info('%s: %s changed: circusd restarts it itself, not restarted '
                              'again', name, changed)
            else:
                await self._restart(name, changed, files)
        self._problems.forget(name)  # a whole look: whatever was wrong is gone
        watch.stamps, watch.seen = stamps, news

    def _stamps(self, name: str, watch: _Watch,
                options: Mapping[str, Any]) -> Optional[Tuple[Stamp, ...]]:
        """The stamps of the watcher's files, or None (logged) if one is missing."""
        try:
            program, script = command_files(
                options.get('cmd', ''), options.get('args'), options.get('working_dir'),
                options.get('env'), options.get('executable'))
        except UnresolvedCommand as exc:
            self._problem(name, 'cannot find its program: %s', exc)
            return None
        stamps = []
        for path in (program, script):
            if path is None:
                continue
            try:
                stamps.append(stamp(path))
            except OSError as exc:
                watched = watch.stamps and os.path.realpath(path) in (
                    s[0] for s in watch.stamps)
                if path == program or watched:
                    self._problem(name, '%s is missing (%s): not watched until it is '
                                  'back', path, exc.strerror or exc)
                    return None
                # an interpreter's argument that is no file: nothing to watch
        return tuple(stamps)

    async def _restart(self, name: str, changed: str, files: List[str]) -> None:
        reply = await self.change_state('restart', name=name, match='simple')
        if reply.get('status') == 'ok':
            self.log.info('%s: %s changed: restarted', name, changed)
            self.emit(name, 'command_reload', files=files)
        else:
            self.log.error('%s: %s changed but the restart failed: %s (not tried again '
                           'until it changes again)', name, changed, reply.get('reason'))

    def _problem(self, name: str, problem: str, *args: Any) -> None:
        """Warn of ``problem % args`` with watcher ``name`` once, until it goes away or
        another one comes."""
        self._problems(name, logging.WARNING, '%s: ' + problem, name, *args)
