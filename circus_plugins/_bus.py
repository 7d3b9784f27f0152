"""Plugin-made events between the running plugins of one process.

:meth:`CircusPlugin.emit <circus_plugins.CircusPlugin.emit>` hands an event to every
other plugin running in the process, each on its own loop, through its ``handle_recv``.
Thread-safe: plugins join and leave from their own threads.
"""
import threading
from typing import Any, List, Tuple

_lock = threading.Lock()
_members: List[Any] = []


def join(plugin: Any) -> None:
    """``plugin`` receives the events the others emit from now on."""
    with _lock:
        if plugin not in _members:
            _members.append(plugin)


def leave(plugin: Any) -> None:
    """``plugin`` receives no more events."""
    with _lock:
        if plugin in _members:
            _members.remove(plugin)


def deliver(source: Any, data: Tuple[bytes, bytes]) -> None:
    """Hand ``data`` to every member but ``source``."""
    with _lock:
        others = [plugin for plugin in _members if plugin is not source]
    for plugin in others:
        plugin._take_plugin_event(data)
