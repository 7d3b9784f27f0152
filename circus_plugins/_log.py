"""Loggers of plugins, and saying a thing once instead of at every check.

Each plugin logs to ``circus_plugins.<name>`` (:attr:`CircusPlugin.log
<circus_plugins.CircusPlugin.log>`), so a log line says which plugin wrote it through its
logger name, and an operator can quiet one plugin (``logging.getLogger(
'circus_plugins.flapping').setLevel(...)``). Every such logger masks credentials
(:mod:`circus_plugins._redact`): a filter on ``circus_plugins`` alone would not see the
records of its children.
"""
import logging
import time
from typing import Any, Dict, Hashable, Optional, Tuple

from ._redact import install

_ROOT = 'circus_plugins'


def plugin_logger(name: str) -> logging.Logger:
    """The logger of the plugin named ``name``: ``circus_plugins.<name>``."""
    logger_name = '%s.%s' % (_ROOT, name) if name else _ROOT
    install(logger_name)
    return logging.getLogger(logger_name)


class SayOnce:
    """Logs a message for a key once, not at every check that finds the same problem.

    :param logger: where to log.
    :param every: seconds after which the same message is logged again (``None``: never,
        until :meth:`forget`).
    :param by_key: whether the key alone says what was said. By default a different
        message for the same key is logged at once (the problem changed); with
        ``by_key``, it is held back too: for a stream of different bad inputs of one
        kind, each key (kind) logged at most once every ``every`` seconds.

    :meth:`forget` re-arms a key when its problem is gone. Not thread-safe: use it from
    the plugin thread.
    """

    def __init__(self, logger: logging.Logger, every: Optional[float] = None,
                 by_key: bool = False) -> None:
        self.logger = logger
        self.every = every
        self.by_key = by_key
        self._said: Dict[Hashable, Tuple[str, float]] = {}

    def __call__(self, key: Hashable, level: int, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at ``level`` unless it was said for ``key`` already; return
        whether it was logged."""
        text = msg % args if args else msg  # args may hold exceptions: compare the text
        said = self._said.get(key)
        now = time.monotonic()
        if said is not None and (self.by_key or said[0] == text) and (
                self.every is None or now - said[1] < self.every):
            return False
        self._said[key] = (text, now)
        self.logger.log(level, msg, *args, stacklevel=2)  # the caller's line
        return True

    def forget(self, key: Hashable) -> bool:
        """Re-arm ``key``; return whether something had been said for it."""
        return self._said.pop(key, None) is not None
