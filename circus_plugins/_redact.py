"""Keeping credentials out of log lines and error messages.

Plugins take URLs that may carry secrets: ``redis://:password@host/0``,
``https://user:password@host/health``, ``https://hooks.example/x?token=...``. Whatever shows
such a URL to a person (a log line, an exception message, a :exc:`ConfigError`) shows it
through :func:`redact_url` or :func:`redact_text`:

- the password of the user information becomes ``***`` (``user:***@host``); user
  information without a password, often a token of its own (``https://TOKEN@host``), is
  replaced whole (``***@host``);
- the value of each query or fragment parameter whose name looks like a secret (``token``,
  ``key``, ``secret``, ``password``, ``pass``, ``pwd``, ``auth``, ``signature``, ``sig``,
  ``access_token``, ``api_key``, ``credential``, ``session``... anywhere in the name, in
  any case) becomes ``***``.

Both work on the text itself, so a URL that does not parse (``http://u:p@[::1``) is
redacted too. Secrets that are not written as URLs (an SMTP password, a webhook token given
as its own option) are declared once with :func:`add_secret`; from then on they are
replaced by ``***`` wherever they appear.

Every record of the ``circus_plugins`` logger goes through :class:`RedactingFilter`, which
applies those rules to the message and to the traceback: a plugin should still redact
what it logs (the filter is a safety net, and sees neither other loggers nor exception
messages that are not logged).
"""
import logging
import re
import threading
from typing import Iterable, Set, Tuple, Union
from urllib.parse import unquote

#: What replaces a secret.
MASK = '***'
#: Secrets shorter than this are masked in URLs but not searched for in free text, where
#: they would mangle ordinary words.
MIN_SECRET = 6

#: Parameter names that hold secrets: any name containing one of these words.
_SECRET_NAME = re.compile(r'token|key|secret|pass|pwd|auth|sig|credential|session|cookie',
                          re.IGNORECASE)
#: A URL in free text: a scheme, ``://``, and everything up to white space or a quote.
_URL_IN_TEXT = re.compile(r'''[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>`]*''')
#: Where the authority of a URL ends.
_AUTHORITY_END = re.compile(r'[/?#]')

_secrets: Set[str] = set()
_secrets_lock = threading.Lock()
_secrets_pattern = None  # a compiled alternation of _secrets, longest first


def _split(url: str) -> Tuple[str, str, str, str, str]:
    """``(scheme://, userinfo@, host[:port], path, query and fragment)``, by text alone:
    never raises. ``userinfo@`` is empty when there is none.

    The user information ends at the last ``@`` before the query or fragment, even past a
    ``/``: a password written with a raw ``/`` (base64 has them) is then still masked, at
    the cost of masking a path that holds an ``@``.
    """
    scheme, sep, rest = url.partition('://')
    if not sep:
        return '', '', '', url, ''
    cut = min([i for i in (rest.find('?'), rest.find('#')) if i >= 0] or [len(rest)])
    before, params = rest[:cut], rest[cut:]
    userinfo, at, after = before.rpartition('@')
    if not at:
        userinfo, after = '', before
    end = after.find('/')
    host, path = (after, '') if end < 0 else (after[:end], after[end:])
    return scheme + sep, userinfo + at, host, path, params


def _redact_parameters(text: str) -> str:
    """``?a=1&token=x#sig=y`` -> ``?a=1&token=***#sig=***``."""
    def one(match):
        name, equals, value = match.group(1), match.group(2), match.group(3)
        if value and _SECRET_NAME.search(unquote(name)):
            return name + equals + MASK
        return match.group(0)
    return re.sub(r'([^?#&;=]*)(=)([^&;#]*)', one, text)


def redact_url(url: str) -> str:
    """``url`` with its password and secret-looking parameters replaced by ``***``.

    Works on any string, parsed or not: ``'http://u:pw@[::1'`` gives
    ``'http://u:***@[::1'``.
    """
    url = str(url)
    scheme, userinfo, host, path, params = _split(url)
    if userinfo:
        user, colon, password = userinfo[:-1].partition(':')
        userinfo = '%s:%s@' % (user, MASK) if colon else MASK + '@'
    return _mask_known(scheme + userinfo + host + path + _redact_parameters(params))


def url_secrets(url: str) -> Tuple[str, ...]:
    """The secrets ``url`` carries (password, bare user information, secret parameter
    values), as written and percent-decoded: what :func:`add_secret` should be given."""
    scheme, userinfo, _, _, params = _split(str(url))
    found = []
    if userinfo:
        user, colon, password = userinfo[:-1].partition(':')
        found.append(password if colon else user)
    for name, value in re.findall(r'([^?#&;=]*)=([^&;#]*)', params):
        if value and _SECRET_NAME.search(unquote(name)):
            found.append(value)
    return tuple(dict.fromkeys(s for secret in found if secret
                               for s in (secret, unquote(secret))))


def add_secret(*secrets: str) -> None:
    """Declare strings that must never be shown: :func:`redact_text` (and so every record
    of the ``circus_plugins`` logger) replaces them with ``***`` from now on.

    For a password or token that a plugin takes as an option of its own, or one inside a
    URL that other code may quote (give it :func:`url_secrets`). Secrets shorter than
    :data:`MIN_SECRET` characters are ignored: they are masked only inside URLs.
    """
    global _secrets_pattern
    new = {str(s) for s in secrets if s and len(str(s)) >= MIN_SECRET}
    if not new - _secrets:
        return
    with _secrets_lock:
        _secrets.update(new)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile('|'.join(re.escape(s) for s in ordered))


def _mask_known(text: str) -> str:
    pattern = _secrets_pattern
    return text if pattern is None else pattern.sub(MASK, text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` (an exception message, a log line) with every URL in it passed through
    :func:`redact_url`, and every declared secret (see :func:`add_secret`), and each of
    ``secrets`` of at least :data:`MIN_SECRET` characters, replaced by ``***``."""
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), str(text))
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len,
                         reverse=True):
        text = text.replace(secret, MASK)
    return _mask_known(text)


def redact_error(error: Union[BaseException, str], url: str) -> str:
    """The message of ``error`` (an exception or a string) about ``url``, safe to show.

    Besides :func:`redact_text` with the secrets of ``url``, every quoted part of the
    message (``'...'`` or ``"..."``) that comes from the URL's user information is
    masked: a parser that split a malformed URL elsewhere may quote a piece of a
    password (``Port could not be cast to integer value as 'pa'``).
    """
    text = redact_text(str(error), url_secrets(url))
    userinfo = _split(str(url))[1][:-1]
    if not userinfo:
        return text

    def quoted(match):
        inner = match.group(2)
        return match.group(1) + MASK + match.group(1) if inner and inner in userinfo \
            else match.group(0)
    return re.sub(r'([\'"])(.*?)\1', quoted, text)


class RedactingFilter(logging.Filter):
    """Applies :func:`redact_text` to a record's message, traceback and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            trace = logging.Formatter().formatException(record.exc_info)
            clean = redact_text(trace)
            if clean != trace:
                record.exc_text = clean
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install(logger_name: str = 'circus_plugins') -> None:
    """Add a :class:`RedactingFilter` to logger ``logger_name`` (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


install()
