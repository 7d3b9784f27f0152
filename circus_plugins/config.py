"""Plugin options: the ``--config`` codec, option converters and circus.ini sections.

circusd 0.19 hands a plugin its ``[plugin:NAME]`` options on the command line as one
``--config key:value:::key2:value2`` argument, and builds that command line without quoting
it, so a value with a space, a ``:::`` or a quote breaks. :func:`encode_config` keeps
circus's form whenever it round-trips exactly and falls back to a JSON object otherwise;
:func:`decode_config` reads both, and :func:`~circus_plugins.get_plugin_cmd` quotes every argument.
"""
import configparser
import fnmatch
import ipaddress
import json
import math
import re
import signal
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Pattern, Sequence,
                    Tuple)
from urllib.parse import urlsplit

# Redaction is part of reading options that hold secrets: offered here to every plugin.
from ._redact import (add_secret, redact_error, redact_text, redact_url,  # noqa: F401
                      url_secrets)
from .errors import ConfigError

#: circusd's defaults, used where a circus.ini or the command line leaves them out.
DEFAULT_ENDPOINT = 'tcp://127.0.0.1:5555'
DEFAULT_PUBSUB = 'tcp://127.0.0.1:5556'
DEFAULT_CHECK_DELAY = 5.0

#: The longest duration, in seconds, that a duration option of the bundled plugins takes
#: (a week): beyond it a timer or timeout is surely a mistake, and some (ZeroMQ's receive
#: timeout, thread waits) cannot even be set.
MAX_SECONDS = 7 * 24 * 3600
#: The largest count (checks, attempts, retries) the bundled plugins take.
MAX_COUNT = 1000000
#: No number option may exceed this in size (2**53: beyond, floats lose whole units).
LARGEST = 2 ** 53

_TRUE = {'1', 'true', 'yes', 'on', 'y', 't'}
_FALSE = {'0', 'false', 'no', 'off', 'n', 'f', ''}
# ASCII digits only: int() and float() would also take '1_000', '\uff15', 'nan', 'inf'.
_INTEGER = re.compile(r'[+-]?[0-9]+')
_DECIMAL = re.compile(r'[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')


def to_bool(value: Any, option: str = 'value') -> bool:
    """Read a boolean option the way circus does (``true``/``1``/``yes``/``on``...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError('option %r: %r is not a boolean' % (option, value))


def to_number(value: Any, option: str, *, minimum: Optional[float] = None,
              maximum: Optional[float] = None, integer: bool = False) -> float:
    """Convert an option to ``float`` (or ``int``), refusing junk with a :class:`ConfigError`.

    Text is read as plain ASCII decimal (``12``, ``-0.5``, ``1e3``; an integer has no
    fraction or exponent): ``nan``, ``inf``, ``1_000`` and other digits than 0-9 are
    refused, and so is any number larger than :data:`LARGEST` in size, whatever
    ``maximum`` says.
    """
    kind = 'an integer' if integer else 'a number'
    if isinstance(value, bool):
        raise ConfigError('option %r: %r is not %s' % (option, value, kind))
    if isinstance(value, int) or (isinstance(value, float) and not integer):
        number = value
    else:
        text = str(value).strip()
        if not (_INTEGER if integer else _DECIMAL).fullmatch(text):
            if not integer and text.lower().lstrip('+-') in ('nan', 'inf', 'infinity'):
                kind = 'a finite number'
            raise ConfigError('option %r: %r is not %s' % (option, value, kind))
        try:
            number = int(text) if integer else float(text)
        except ValueError:  # more digits than Python converts
            raise ConfigError('option %r: %r is out of range' % (option, value)) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError('option %r: %r is not a finite number' % (option, value))
    if minimum is not None and number < minimum:
        raise ConfigError('option %r: %r is below %s' % (option, value, minimum))
    if maximum is not None and number > maximum:
        raise ConfigError('option %r: %r is above %s' % (option, value, maximum))
    if abs(number) > LARGEST:
        raise ConfigError('option %r: %r is out of range' % (option, value))
    return number


def to_signum(value: Any, option: str = 'signal') -> int:
    """Read a signal as circus does: a number, or a name with or without ``SIG``
    (``SIGKILL``, ``kill``), optionally with an offset (``SIGRTMIN+1``).

    Raises :class:`ConfigError` naming ``option`` if the signal does not exist here.
    """
    text = str(value).strip()
    if re.fullmatch(r'[0-9]{1,4}', text):
        number = int(text)
    else:
        match = re.fullmatch(r'(?:SIG)?([A-Z0-9]+)(?:\+([0-9]{1,4}))?', text.upper())
        base = signal.Signals.__members__.get('SIG' + match.group(1)) if match else None
        if match is None or base is None:
            raise ConfigError('option %r: %r is not a signal' % (option, value)) from None
        number = int(base) + int(match.group(2) or 0)
    if number not in {int(s) for s in signal.valid_signals()}:
        raise ConfigError('option %r: %r is not a signal' % (option, value))
    return number


def signal_name(signum: int) -> str:
    """The name of signal ``signum`` for a log line (``SIGKILL`` for 9); the number itself,
    as text, for a signal without a name (``SIGRTMIN+1`` has none)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def to_name(value: Any, option: str) -> str:
    """Read a name (of a watcher, say): white space around it is dropped, and control
    characters (a newline...) are refused. May return ``''``."""
    text = str(value).strip()
    if _CONTROL.search(text):
        raise ConfigError('option %r: %r contains control characters' % (option, value))
    return text


_LABEL = re.compile(r'(?!-)[\w-]{1,63}(?<!-)')


def to_host(value: Any, option: str, *, ipv6: bool = True) -> str:
    """Read a host: an IP address, or a name made of dot-separated labels of letters,
    digits, ``-`` and ``_`` (at most 253 characters), the last one not all digits.
    Whether a name resolves is not checked. With ``ipv6`` false, an IPv6 address is
    refused."""
    text = str(value).strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        labels = text[:-1].split('.') if text.endswith('.') else text.split('.')
        if (0 < len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
                and not labels[-1].isdigit()):  # '999.1.1.1' is no name, nor address
            return text
        raise ConfigError('option %r: %r is not a host name or IP address'
                          % (option, value)) from None
    if address.version == 6 and not ipv6:
        raise ConfigError('option %r: %r is an IPv6 address; this option takes an IPv4 '
                          'address or a host name' % (option, value))
    return text


def to_regex(value: Any, option: str, *, groups: Sequence[str] = ()) -> Pattern:
    """Compile a regular expression option; ``groups`` names the ``(?P<name>...)`` groups
    it must have. Refuses, with a :class:`ConfigError`, a pattern that does not compile,
    repeats too much or nests too deep."""
    text = str(value)
    try:
        pattern = re.compile(text)
    # OverflowError: a repeat count too large; RecursionError: nested too deep
    except (re.error, OverflowError, RecursionError) as exc:
        raise ConfigError('option %r: %r is not a regular expression: %s'
                          % (option, value, exc)) from None
    missing = [group for group in groups if group not in pattern.groupindex]
    if missing:
        raise ConfigError('option %r: %r has no (?P<%s>...) group'
                          % (option, value, missing[0]))
    return pattern


#: An event's action (``spawn``, ``flapping_giveup``...): what a topic's last part may be.
ACTION = re.compile(r'[A-Za-z0-9_-]{1,64}')


def to_actions(value: Any, option: str) -> Tuple[str, ...]:
    """Read a list of event actions, separated by commas or spaces; ``*`` stands for
    every action."""
    actions = tuple(a for a in re.split(r'[\s,]+', str(value).strip()) if a)
    if not actions or not all(a == '*' or ACTION.fullmatch(a) for a in actions):
        raise ConfigError('option %r: %r is not a list of event names (letters, digits, '
                          '_ and -; or *)' % (option, value))
    return actions


def to_matcher(value: Any, option: str) -> Callable[[str], bool]:
    """Read a filter of names: ``'*'`` (everything), comma- or space-separated globs
    (``web-*, api``; ``*``, ``?`` and ``[...]`` as in shell patterns, case-sensitive),
    or, when the value begins with ``re:``, a regular expression that must match the
    whole name (``re:(web|api)-\\d+``). Returns a function ``name -> bool``."""
    text = str(value).strip()
    if text.startswith('re:'):
        pattern = to_regex(text[3:].strip(), option)
        return lambda name: pattern.fullmatch(name) is not None
    globs = [glob for glob in re.split(r'[\s,]+', text) if glob]
    if not globs:
        raise ConfigError('option %r: %r names nothing (use * for every name)'
                          % (option, value))
    if '*' in globs:
        return lambda name: True
    pattern = re.compile('|'.join(fnmatch.translate(glob) for glob in globs))
    return lambda name: pattern.match(name) is not None


def to_url(value: Any, option: str, *,
           check: Optional[Callable[[str], None]] = None) -> str:
    """Read a URL: by default an ``http://`` or ``https://`` one with a host (and a port
    from 1 to 65535 if any); ``check(url)`` replaces that test, raising
    :class:`ValueError` with what is wrong (``'is not a Redis URL: ...'``). The URL's
    secrets are masked in every log line from now on (:func:`add_secret`), and a
    :class:`ConfigError` shows it redacted."""
    url = str(value).strip()
    add_secret(*url_secrets(url))
    try:
        (check or _check_http_url)(url)
    except ValueError as exc:
        raise ConfigError('option %r: %r %s' % (option, redact_url(str(value)),
                                                redact_error(exc, url))) from None
    return url


def _check_http_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if 'port' in str(exc).lower():
            raise ValueError('has a port that is not a number from 1 to 65535') from None
        raise ValueError('is not a valid URL: %s' % exc) from None  # 'Invalid IPv6 URL'
    if parts.scheme not in ('http', 'https') or not parts.netloc:
        raise ValueError('is not an http:// or https:// URL')
    if re.search(r'[\x00-\x20\x7f]', url):
        raise ValueError('contains white space or control characters')
    if not parts.hostname:
        raise ValueError('has no host')
    if port == 0:
        raise ValueError('has a port that is not a number from 1 to 65535')


def _circus_form(config: Mapping[str, str]) -> str:
    return ':::'.join('%s:%s' % item for item in sorted(config.items()))


def encode_config(config: Mapping[str, Any]) -> str:
    """Encode a mapping of options as one ``--config`` argument.

    Produces circus's ``key:value:::key2:value2`` when that decodes back to exactly the same
    strings (so circus 0.19's own runner reads it too), and a JSON object otherwise.
    """
    config = {str(k): str(v) for k, v in config.items()}
    text = _circus_form(config)
    try:
        if text.isascii() and decode_config(text) == config:
            return text
    except ConfigError:
        pass
    return json.dumps(config, sort_keys=True)


def decode_config(text: Optional[str]) -> Dict[str, str]:
    """Decode a ``--config`` argument made by :func:`encode_config` or by circus 0.19.

    Raises :class:`ConfigError` naming the part it cannot read.
    """
    if not text:
        return {}
    if text.lstrip().startswith('{'):
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise ConfigError(redact_text('--config: %r is not a valid JSON object: %s'
                                          % (text, exc))) from None
        if not isinstance(config, dict):
            raise ConfigError(redact_text('--config: %r is not a JSON object' % text))
        return {str(k): v if isinstance(v, str) else json.dumps(v)
                for k, v in config.items()}
    config = {}
    for item in text.split(':::'):
        key, sep, value = item.partition(':')
        if not sep or not key.strip():
            raise ConfigError(redact_text('--config: item %r is not of the form key:value'
                                          % item))
        config[key.strip()] = value.strip()
    return config


class IniPlugin(NamedTuple):
    """A ``[plugin:NAME]`` section of a circus.ini and the endpoints of its ``[circus]``."""
    use: str
    config: Dict[str, str]
    endpoint: str
    pubsub_endpoint: str
    check_delay: float


def _read_ini(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding='utf-8') as ini:
            parser.read_file(ini)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(redact_text('--ini %r: %s' % (path, exc))) from None
    return parser


def ini_plugin_names(path: str) -> List[str]:
    """The NAMEs of the ``[plugin:NAME]`` sections of the circus.ini at ``path``, in
    order."""
    return [section.partition(':')[2] for section in _read_ini(path).sections()
            if section.startswith('plugin:')]


def read_ini_plugin(path: str, name: str) -> IniPlugin:
    """Read section ``[plugin:NAME]`` of the circus.ini at ``path``.

    The options are those circusd would hand the plugin: the section's keys less ``use``,
    plus ``name`` set to ``plugin:NAME``. Endpoints and check delay come from ``[circus]``,
    with circusd's defaults where absent.
    """
    parser = _read_ini(path)
    section = 'plugin:%s' % name
    if not parser.has_section(section):
        raise ConfigError('--ini %r: no [%s] section' % (path, section))
    config = dict(parser.items(section))
    if 'use' not in config:
        raise ConfigError('--ini %r: [%s] has no "use" option' % (path, section))
    use = config.pop('use')
    config['name'] = section
    return IniPlugin(use, config, *_circus_settings(path, parser))


def read_ini_circus(path: str) -> Tuple[str, str, float]:
    """``(endpoint, pubsub_endpoint, check_delay)`` of the ``[circus]`` section of the
    circus.ini at ``path``, with circusd's defaults where absent."""
    return _circus_settings(path, _read_ini(path))


def _circus_settings(path: str, parser: configparser.RawConfigParser) -> Tuple[str, str, float]:
    def circus(option, default):
        if parser.has_option('circus', option):
            return parser.get('circus', option)
        return default

    check_delay = to_number(circus('check_delay', DEFAULT_CHECK_DELAY),
                            '--ini %s: check_delay' % path, minimum=0)
    return (circus('endpoint', DEFAULT_ENDPOINT), circus('pubsub_endpoint', DEFAULT_PUBSUB),
            check_delay)
