"""Checking circusd's endpoints and the SSH server before anything connects.

libzmq reports a malformed endpoint only when a socket connects to it, by then inside the
plugin thread, and a socket left open on that path keeps the ZMQ context from ever
terminating. Checking the text first gives a one-line error naming the culprit instead.
"""
import re
from typing import Any, List

from .errors import ConfigError

# tcp://HOST:PORT, HOST a name, an IPv4 address or a bracketed IPv6 address.
_TCP = re.compile(r'(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]@;*]+):(?P<port>[0-9]{1,5})')
# [user@]host[:port]
_SSH = re.compile(r'(?:[^\s@:]+@)?(?P<host>[^\s@:/]+)(?::(?P<port>[0-9]{1,5}))?')


def _port_ok(text: str) -> bool:
    return 0 < int(text) < 65536


def check_endpoint(value: Any, what: str) -> str:
    """Return ``value`` if it is an endpoint a ZeroMQ socket can connect to:
    ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``.

    :raises ConfigError: naming ``what`` (``'endpoint'``, ``'--pubsub'``...) and the value.
    """
    text = value if isinstance(value, str) else ''
    scheme, sep, rest = text.partition('://')
    if scheme == 'tcp' and sep:
        match = _TCP.fullmatch(rest)
        if match and _port_ok(match.group('port')):
            return text
    elif scheme in ('ipc', 'inproc') and sep and rest and not rest.isspace():
        return text
    raise ConfigError('%s: %r is not an endpoint to connect to (expected tcp://HOST:PORT '
                      'with a port from 1 to 65535, ipc://PATH or inproc://NAME)'
                      % (what, value))


def check_ssh_server(value: Any, what: str) -> Any:
    """Return ``value`` if it is ``None`` or ``[user@]host[:port]``.

    :raises ConfigError: naming ``what`` and the value.
    """
    if value is None:
        return None
    match = _SSH.fullmatch(value) if isinstance(value, str) else None
    if match and (match.group('port') is None or _port_ok(match.group('port'))):
        return value
    raise ConfigError('%s: %r is not an SSH server (expected [user@]host[:port])'
                      % (what, value))


def check_endpoints(value: Any, what: str) -> List[str]:
    """A list of endpoints from ``value``: a list, or a string of endpoints separated
    by commas or white space; each checked as by :func:`check_endpoint`."""
    items = value.replace(',', ' ').split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError('%s: %r is not a list of endpoints' % (what, value))
    return [check_endpoint(item, what) for item in items]


def endpoint_option(value: Any, key: str) -> str:
    """:func:`check_endpoint` for option ``key`` of a plugin (the error says "option")."""
    return check_endpoint(value, 'option %r' % key)


def endpoints_option(value: Any, key: str) -> List[str]:
    """:func:`check_endpoints` for option ``key`` of a plugin."""
    return check_endpoints(value, 'option %r' % key)
