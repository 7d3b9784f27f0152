"""Sending a mail over SMTP, on the caller's asyncio loop.

:class:`SmtpSender` holds a checked SMTP configuration and sends one mail per
:meth:`SmtpSender.send` with `aiosmtplib <https://aiosmtplib.readthedocs.io/>`_, which runs
on the asyncio loop of whoever awaits it (a plugin's loop): nothing blocks, no thread is
made. It needs aiosmtplib >= 3: ``pip install circus-plugins[alerts]``.

The TLS modes:

``none``
    Plain text on the whole way (port 25 by default). Meant for a relay on the same host.
``starttls``
    Plain text until ``STARTTLS``, which is always sent, credentials or not: a server that
    does not offer it is refused, never written to in plain text (port 587 by default).
``tls``
    TLS from the first byte, "implicit TLS" or SMTPS (port 465 by default).

With TLS the server's certificate is verified, against the system's authorities or those
of ``ca_file`` alone, and must name the host, unless ``verify`` is false. The sender logs in
only when a user is given.

:meth:`SmtpSender.send` raises :exc:`SmtpError` on any failure, for its caller to retry; the
error's message says where and at which step it failed, and never holds the password.
"""
import asyncio
import email.utils
import ipaddress
import logging
import re
import ssl
import time
from email.message import EmailMessage
from typing import Any, List, Optional, Sequence, Tuple, Union

from .._log import plugin_logger
from .._redact import add_secret, redact_text
from ..config import MAX_SECONDS, to_host, to_number
from ..errors import ConfigError, PluginLoadError
from ._outbox import SendError

#: The TLS modes, and the port each uses when none is given.
TLS_MODES = {'none': 25, 'starttls': 587, 'tls': 465}
#: The longest subject sent, in characters (before the prefix); a longer one is cut.
MAX_SUBJECT = 200

# An address as written in an envelope: something, an @, a domain; no white space, no
# angle brackets, no control characters.
_ADDRESS = re.compile(r'[^@\s<>",;\x00-\x1f\x7f]+@[^@\s<>",;\x00-\x1f\x7f]+')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]+')


class SmtpError(SendError):
    """A mail could not be sent (the server could not be reached, refused TLS, the
    login or the mail, or did not answer in time). Its message holds no password."""


def import_aiosmtplib(plugin: str = 'alerts') -> Any:
    """aiosmtplib, imported only when a sender is made.

    :raises PluginLoadError: aiosmtplib is not installed, in one line naming the extra.
    """
    try:
        import aiosmtplib
    except ImportError as exc:
        raise PluginLoadError('plugin %s needs aiosmtplib >= 3 to send mail (%s): pip install '
                              'circus-plugins[alerts]' % (plugin, exc)) from None
    return aiosmtplib


def _address(value: Any, option: str) -> Tuple[str, str]:
    """``(as written, address alone)`` for ``ops@example.org`` or
    ``Ops <ops@example.org>``; :exc:`ConfigError` naming ``option`` otherwise."""
    text = str(value).strip()
    if _CONTROL.search(text):
        raise ConfigError('option %r: %r contains control characters' % (option, value))
    _, address = email.utils.parseaddr(text)
    if not _ADDRESS.fullmatch(address):
        raise ConfigError('option %r: %r is not an e-mail address' % (option, value))
    return text, address


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == 'localhost'


class SmtpSender:
    """Sends mails to fixed recipients through one SMTP server.

    Every argument is checked here; a bad one raises :exc:`ConfigError` naming the plugin
    option it comes from (``smtp_host``, ``smtp_port``, ``smtp_tls``, ``smtp_user``,
    ``smtp_password``, ``mail_from``, ``mail_to``, ``subject_prefix``, ``smtp_timeout``,
    ``smtp_verify``, ``smtp_ca_file``).

    :param host: the server's host name or IP address.
    :param port: its port; ``None`` or ``0``: 25, 587 or 465 by ``tls``.
    :param tls: ``'none'``, ``'starttls'`` or ``'tls'`` (see the module's text).
    :param user: the login; ``''``: no login.
    :param password: the password of ``user``, declared with
        :func:`~circus_plugins._redact.add_secret` so that no log line shows it.
    :param mail_from: the sender, ``addr@host`` or ``Name <addr@host>``.
    :param mail_to: the recipients: a list, or one string of comma-separated addresses.
    :param subject_prefix: put with a space before every subject (``''``: none).
    :param timeout: seconds a whole :meth:`send` may take, connecting included.
    :param verify: whether to verify the server's certificate and host name.
    :param ca_file: a PEM file of the authorities to trust instead of the system's.
    :param log: where to log; default ``circus_plugins.alerts``.
    :param plugin: the plugin's name, for the message when aiosmtplib is missing.
    :raises PluginLoadError: aiosmtplib is not installed.
    """

    def __init__(self, host: str, port: Optional[int] = None, tls: str = 'starttls', *,
                 user: str = '', password: str = '', mail_from: str,
                 mail_to: Union[str, Sequence[str]], subject_prefix: str = '',
                 timeout: float = 30.0, verify: bool = True, ca_file: Optional[str] = None,
                 log: Optional[logging.Logger] = None, plugin: str = 'alerts') -> None:
        self._aiosmtplib = import_aiosmtplib(plugin)
        self.log = log or plugin_logger('alerts')
        self.host = to_host(host, 'smtp_host')
        self.tls = str(tls).strip().lower()
        if self.tls not in TLS_MODES:
            raise ConfigError('option %r: %r is not one of %s'
                              % ('smtp_tls', tls, ', '.join(TLS_MODES)))
        self.port = int(to_number(port or TLS_MODES[self.tls], 'smtp_port', minimum=1,
                                  maximum=65535, integer=True))
        self.user = '' if user is None else str(user)
        self._password = '' if password is None else str(password)
        if self._password:
            add_secret(self._password)
        if _CONTROL.search(self.user):
            raise ConfigError('option %r: %r contains control characters'
                              % ('smtp_user', user))
        if self.user and not self._password:
            raise ConfigError("option 'smtp_password': needed when smtp_user is set")
        if self._password and not self.user:
            raise ConfigError("option 'smtp_user': needed when smtp_password is set")
        self.mail_from, self._envelope_from = _address(mail_from, 'mail_from')
        if isinstance(mail_to, str):
            mail_to = mail_to.split(',')
        recipients = [_address(one, 'mail_to') for one in mail_to if str(one).strip()]
        if not recipients:
            raise ConfigError("option 'mail_to': no recipient given")
        self.mail_to: List[str] = [written for written, _ in recipients]
        self._envelope_to = list(dict.fromkeys(address for _, address in recipients))
        self.subject_prefix = _CONTROL.sub(' ', str(subject_prefix or '')).strip()
        self.timeout = to_number(timeout, 'smtp_timeout', minimum=0.001, maximum=MAX_SECONDS)
        self.verify = bool(verify)
        self.ca_file = ca_file or None
        self._domain = self._envelope_from.rpartition('@')[2]
        self._tls_context = self._make_tls_context() if self.tls != 'none' else None
        if self.user and self.tls == 'none' and not _is_loopback(self.host):
            self.log.warning('smtp_tls is none: the password for %s is sent in plain text '
                             'to %s', self.user, self.where)

    @property
    def where(self) -> str:
        """``host:port`` of the server, for messages."""
        host = '[%s]' % self.host if ':' in self.host else self.host
        return '%s:%d' % (host, self.port)

    def _make_tls_context(self) -> ssl.SSLContext:
        if not self.verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError('option %r: %r cannot be read as PEM certificates: %s'
                              % ('smtp_ca_file', self.ca_file, exc)) from None

    def message(self, subject: str, text: str) -> EmailMessage:
        """The mail :meth:`send` sends: ``subject`` after the prefix (control characters
        made spaces, cut at :data:`MAX_SUBJECT` characters), ``text`` as a UTF-8
        ``text/plain`` body, and Date and Message-ID headers."""
        subject = _CONTROL.sub(' ', str(subject)).strip()
        if len(subject) > MAX_SUBJECT:
            subject = subject[:MAX_SUBJECT - 1] + '\u2026'
        message = EmailMessage()
        message['Subject'] = ('%s %s' % (self.subject_prefix, subject)).strip()
        message['From'] = self.mail_from
        message['To'] = ', '.join(self.mail_to)
        message['Date'] = email.utils.formatdate(localtime=True)
        message['Message-ID'] = email.utils.make_msgid(domain=self._domain)
        message.set_content(str(text), charset='utf-8', cte='quoted-printable')
        return message

    async def send(self, subject: str, text: str) -> None:
        """Send one mail (see :meth:`message`) to every recipient, on the running loop.

        Returns once the server accepted it for at least one recipient (the others
        refused are logged as a warning); takes at most ``timeout`` seconds.

        :raises SmtpError: it could not be sent; the message names the server and the
            step (``connect``, ``starttls``, ``login``, ``send``), never the password.
        """
        message = self.message(subject, text)
        step = ['connect']
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._deliver(message, step), self.timeout)
        except asyncio.TimeoutError:
            if step[0] == 'quit':  # accepted: sending it again would send it twice
                self.log.debug('no answer to QUIT from %s after the mail was sent',
                               self.where)
                return
            raise SmtpError('mail to %s failed at %s: no answer within %s s'
                            % (self.where, step[0], self.timeout)) from None
        except SmtpError:
            raise
        except Exception as exc:
            # The chained exception is dropped: its text and arguments are not redacted.
            raise SmtpError(self._safe('mail to %s failed at %s: %s: %s'
                                       % (self.where, step[0], type(exc).__name__, exc))
                            ) from None
        self.log.debug('mail %r sent to %d recipient(s) via %s (%s) in %.3f s',
                       message['Subject'], len(self._envelope_to), self.where, self.tls,
                       time.monotonic() - started)

    def _safe(self, text: str) -> str:
        """``text`` with the password masked, however short."""
        if self._password:
            text = text.replace(self._password, '***')
        return redact_text(text)

    async def _deliver(self, message: EmailMessage, step: List[str]) -> None:
        smtp = self._aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=self.tls == 'tls', start_tls=False, validate_certs=self.verify,
            tls_context=self._tls_context)
        try:
            await smtp.connect()
            if self.tls == 'starttls':
                step[0] = 'starttls'
                # Raises SMTPException when the server does not offer STARTTLS.
                await smtp.starttls()
            if self.user:
                step[0] = 'login'
                await smtp.login(self.user, self._password)
            step[0] = 'send'
            refused, _ = await smtp.send_message(message, sender=self._envelope_from,
                                                 recipients=self._envelope_to)
            if refused:
                self.log.warning('%s refused recipient(s) %s: %s', self.where,
                                 ', '.join(sorted(refused)),
                                 '; '.join(str(r) for r in refused.values()))
            step[0] = 'quit'
            try:  # the mail is accepted: a failed QUIT is no reason to send it again
                await smtp.quit()
            except Exception as exc:
                self.log.debug('QUIT to %s failed after the mail was sent: %s', self.where,
                               self._safe(str(exc)))
        finally:
            if smtp.is_connected:
                smtp.close()


__all__ = ['SmtpSender', 'SmtpError', 'import_aiosmtplib', 'TLS_MODES']
