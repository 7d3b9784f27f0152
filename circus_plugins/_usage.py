"""The CPU time and resident memory of processes, read with psutil.

:class:`UsageReader` reads them for the pids circusd reports (the plugin must run on
circusd's machine). psutil reads ``/proc``: call :meth:`UsageReader.read` in a worker
thread (``await loop.run_in_executor(None, reader.read, keys)``), one call at a time.
That costs circusd nothing, unlike its ``stats`` command.

:func:`to_stats_source` reads the ``stats_source`` option of the plugins that may take
figures from circusd-stats's stream instead.
"""
from typing import Any, Dict, Iterable, NamedTuple, Set, Tuple

from .errors import ConfigError, PluginLoadError

__all__ = ['Usage', 'UsageReader', 'import_psutil', 'to_stats_source', 'STATS_SOURCES']

#: The values of option ``stats_source``: ``auto``, circusd-stats's stream while it is live
#: and the plugin's other source otherwise; ``stream``, the stream's figures whenever it
#: has some; ``poll``, never the stream (the plugin opens no socket for it).
STATS_SOURCES = ('auto', 'stream', 'poll')

#: A process: its pid and when it started (seconds since the epoch, as circusd says), so
#: that a pid used again is another process.
Key = Tuple[int, float]


def to_stats_source(value: Any, option: str = 'stats_source') -> str:
    """Read option ``stats_source``: one of :data:`STATS_SOURCES`."""
    text = str(value).strip().lower()
    if text not in STATS_SOURCES:
        raise ConfigError('option %r: %r is not one of %s' % (option, value,
                                                              ', '.join(STATS_SOURCES)))
    return text


class Usage(NamedTuple):
    """What the operating system says of one process: CPU seconds (user + system, and
    its children's when they are counted) and resident memory in bytes."""
    cpu: float
    rss: int


def import_psutil(plugin: str, extra: str) -> Any:
    """psutil, or one line naming the extra to install."""
    try:
        import psutil
    except ImportError as exc:
        raise PluginLoadError('plugin %s needs psutil (%s): pip install circus-plugins[%s]'
                              % (plugin, exc, extra)) from None
    return psutil


class UsageReader:
    """Reads :class:`Usage` of processes, keeping a ``psutil.Process`` for each.

    :param psutil: the psutil module (:func:`import_psutil`).
    :param children: whether a process's figures include its descendants': the CPU of
        those it waited for and of those alive, the memory of those alive.
    """

    def __init__(self, psutil: Any, children: bool = False) -> None:
        self.psutil, self.children = psutil, children
        self._processes: Dict[Key, Any] = {}
        #: The keys of the last :meth:`read` whose process no longer exists (not those
        #: psutil may not read, nor zombies): the caller's list of pids may be out of date
        #: (or the process ended just now).
        self.gone: Set[Key] = set()

    def forget(self) -> None:
        """Drop every ``psutil.Process`` kept (they are made again)."""
        self._processes.clear()

    def read(self, keys: Iterable[Key]) -> Dict[Key, Usage]:
        """The usage of each process of ``keys`` that can be read (not ended, not
        another user's); the processes not in ``keys`` are forgotten."""
        psutil, usage = self.psutil, {}
        keys = list(keys)
        gone = set()
        for key in keys:
            try:
                process = self._processes.get(key)
                if process is None:
                    process = self._processes[key] = psutil.Process(key[0])
                with process.oneshot():
                    times, rss = process.cpu_times(), process.memory_info().rss
                cpu = times.user + times.system
                if self.children:
                    cpu += times.children_user + times.children_system
                    for child in process.children(recursive=True):
                        try:
                            with child.oneshot():
                                more = child.cpu_times()
                                rss += child.memory_info().rss
                            cpu += more.user + more.system
                        except (psutil.NoSuchProcess, psutil.AccessDenied):
                            pass
                usage[key] = Usage(cpu, rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess) as exc:
                self._processes.pop(key, None)
                # A zombie (a NoSuchProcess too) is not gone: circusd will reap it.
                if isinstance(exc, psutil.NoSuchProcess) and not isinstance(
                        exc, psutil.ZombieProcess):
                    gone.add(key)
        for key in set(self._processes) - set(keys):
            del self._processes[key]
        self.gone = gone
        return usage
