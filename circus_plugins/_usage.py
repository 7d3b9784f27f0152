"""The CPU time and resident memory of processes, read with psutil.

:class:`UsageReader` reads them for the pids circusd reports (the plugin must run on
circusd's machine). psutil reads ``/proc``: call :meth:`UsageReader.read` in a worker
thread (``await loop.run_in_executor(None, reader.read, keys)``), one call at a time.
That costs circusd nothing, unlike its ``stats`` command. :meth:`UsageReader.figures`
reads the figures circusd's ``stats`` would answer (CPU and memory percents, resident
memory, children), for the plugins that would otherwise ask it; :func:`runs_here` says
whether circusd's processes are on this machine at all.
"""
import ipaddress
import re
from typing import Any, Dict, Iterable, NamedTuple, Optional, Set, Tuple

from ._stats import Process
from .errors import PluginLoadError

__all__ = ['Usage', 'UsageReader', 'import_psutil', 'runs_here']

#: A process: its pid and when it started (seconds since the epoch, as circusd says), so
#: that a pid used again is another process.
Key = Tuple[int, float]


def runs_here(endpoint: str, ssh_server: Optional[str]) -> bool:
    """Whether circusd at ``endpoint`` runs on this machine, so that its processes may be
    read here: no ``ssh_server``, and an ``ipc://`` endpoint or a ``tcp://`` one on a
    loopback address (``127.0.0.0/8``, ``::1``, ``localhost``). Any other address may be
    this machine's too, but that is not known for sure: ``False``."""
    if ssh_server:
        return False
    text = str(endpoint).strip()
    if text.startswith('ipc://'):
        return True
    match = re.fullmatch(r'tcp://(\[[^\]]*\]|[^:/]*):\d+/?', text)
    if not match:
        return False
    host = match.group(1).strip('[]')
    if host.lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or junk
        return False


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
        self._by_pid: Dict[int, Any] = {}  # for figures(): CPU percent needs the same object
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

    def figures(self, pids: Iterable[int]) -> Dict[int, Process]:
        """What circus 0.19's ``stats`` says of each process of ``pids`` that can be read
        (not ended, not a zombie, not another user's), as :class:`~circus_plugins._stats.
        Process`: CPU in percent of one core since the previous call that read the
        process (psutil's ``cpu_percent``: ``0.0`` at its first reading, as circusd
        answers for a new process), memory in percent of the machine's (three decimals,
        as circusd rounds it) and resident memory in bytes (exact, where circusd rounds).
        With ``children``, each process's direct children too (as circusd lists them),
        their CPU ``None``: circusd measures them afresh each time, always ``0.0``.
        Pids not in ``pids`` are forgotten, so a pid used again starts afresh. Blocking
        (reads ``/proc``): in a worker thread, one call at a time. :attr:`gone` is set
        to the ``(pid, 0.0)`` of those that no longer exist."""
        psutil, found, gone = self.psutil, {}, set()
        pids = set(pids)
        total = psutil.virtual_memory().total or 1  # once, not once per process
        for pid in pids:
            try:
                process = self._by_pid.get(pid)
                if process is None:
                    process = self._by_pid[pid] = psutil.Process(pid)
                found[pid] = self._figures(process, total, cpu=True)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess) as exc:
                self._by_pid.pop(pid, None)
                if isinstance(exc, psutil.NoSuchProcess) and not isinstance(
                        exc, psutil.ZombieProcess):
                    gone.add((pid, 0.0))
        for pid in set(self._by_pid) - pids:
            del self._by_pid[pid]
        self.gone = gone
        return found

    def _figures(self, process: Any, total: int, cpu: bool) -> Process:
        with process.oneshot():
            rss = process.memory_info().rss
            percent = process.cpu_percent(None) if cpu else None
        children = []
        if cpu and self.children:
            for child in process.children():
                try:
                    children.append(self._figures(child, total, cpu=False))
                except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                    pass  # ended meanwhile, or not ours: circusd leaves it out too
        return Process(process.pid, percent, round(rss * 100.0 / total, 3), rss,
                       tuple(children))
