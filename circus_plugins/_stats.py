"""Reading circusd's ``stats`` replies: the figures of each process, typed.

circusd describes a watcher's processes as ``{pid: info}``, where ``info`` holds ``cpu``
and ``mem`` (percent), ``mem_info1`` (the resident set size, as ``'1.52M'``) and
``children`` (the same for each child), any of them ``'N/A'`` when psutil may not read
it; a process that ended meanwhile is a string (``'No such process (stopped?)'``).
:func:`processes` turns that into :class:`Process` tuples whose unknown figures are
``None``, for :class:`~circus_plugins.statsd.FullStats` and
:class:`~circus_plugins.resource_watcher.ResourceWatcher` alike.
"""
import re
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40, 'P': 1 << 50}


def human_to_bytes(text: object) -> int:
    """``'1.52M'`` -> bytes, as circusd writes memory sizes (``ValueError`` if it is
    not a size, ``OverflowError`` if it has more digits than a float)."""
    match = re.fullmatch(r'\s*([0-9.]+)\s*([KMGTP]?)B?\s*', str(text), re.IGNORECASE)
    if not match:
        raise ValueError('%r is not a size' % (text,))
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class Process(NamedTuple):
    """One process of a ``stats`` reply; ``None`` where circusd gave no usable figure."""
    pid: int
    cpu: Optional[float]  # percent of one core
    mem: Optional[float]  # percent of the machine's memory
    rss: Optional[int]  # resident set size, in bytes
    children: Tuple['Process', ...]


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):  # JSON's true is no figure
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):  # 'N/A'
        return None


def _pid(*candidates: Any) -> Optional[int]:
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _process(info: Any, key: Any = None) -> Optional[Process]:
    if not isinstance(info, Mapping):
        return None
    pid = _pid(info.get('pid'), key)
    if pid is None:
        return None
    try:
        rss: Optional[int] = human_to_bytes(info.get('mem_info1'))
    except (ValueError, OverflowError):
        rss = None
    children = info.get('children')
    children = [_process(child) for child in children] if isinstance(children, list) else []
    return Process(pid, _number(info.get('cpu')), _number(info.get('mem')), rss,
                   tuple(child for child in children if child is not None))


def processes(info: Any) -> Dict[int, Process]:
    """The live processes of one watcher's ``stats`` (``{pid: info}``), by pid."""
    found = {}
    if isinstance(info, Mapping):
        for key, value in info.items():
            process = _process(value, key)
            if process is not None:
                found[process.pid] = process
    return found
