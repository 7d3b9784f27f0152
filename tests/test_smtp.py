"""SmtpSender against real SMTP servers (aiosmtpd) on 127.0.0.1: plain, STARTTLS with AUTH,
implicit TLS, certificates verified against a trustme authority, and the failures."""
import asyncio
import base64
import email
import email.policy
import logging
import re
import socket
import ssl
import sys
import time

import pytest
import trustme
from tornado.ioloop import IOLoop

from circus_plugins.alerts._smtp import SmtpError, SmtpSender, import_aiosmtplib
from circus_plugins.errors import ConfigError, PluginLoadError
from circus_plugins.testing import free_port
from receivers import PASSWORD, USER, WRONG, server_context, smtp_server

def sender(port, tls='none', **options):
    options.setdefault('mail_from', 'Circus <circus@example.org>')
    options.setdefault('mail_to', 'ops@example.org, Oncall <oncall@example.org>')
    options.setdefault('subject_prefix', '[circus]')
    options.setdefault('timeout', 3)
    return SmtpSender('127.0.0.1', port, tls, **options)


def send(smtp, subject='web crashed', text='exit code 3'):
    asyncio.run(smtp.send(subject, text))


def test_plain_message_has_prefix_from_to_date_id_and_utf8_body():
    body = 'Ünïcode – 漢字 ✓\nlast line\n'
    with smtp_server() as (port, inbox):
        send(sender(port), 'web crashed – exit 3', body)
    [(envelope, tls, login)] = inbox.mails
    assert not tls and not login
    assert envelope.mail_from == 'circus@example.org'
    assert envelope.rcpt_tos == ['ops@example.org', 'oncall@example.org']
    mail = inbox.parsed()
    assert mail['Subject'] == '[circus] web crashed – exit 3'
    assert mail['From'] == 'Circus <circus@example.org>'
    assert mail['To'] == 'ops@example.org, Oncall <oncall@example.org>'
    assert mail['Date'] and email.utils.parsedate_to_datetime(mail['Date'])
    assert mail['Message-ID'].endswith('@example.org>')
    assert mail.get_content_type() == 'text/plain'
    assert mail.get_content_charset() == 'utf-8'
    assert mail.get_content().replace('\r\n', '\n') == body


def test_some_recipients_refused_is_sent_and_logged_all_refused_raises(caplog):
    with smtp_server() as (port, inbox):
        send(sender(port, mail_to='nobody@example.org, ops@example.org'))
        assert inbox.mails[0][0].rcpt_tos == ['ops@example.org']
        assert 'refused recipient(s) nobody@example.org: ' in caplog.text
        with pytest.raises(SmtpError, match='at send'):
            send(sender(port, mail_to='nobody@example.org'))
    assert len(inbox.mails) == 1


def test_subject_without_control_characters_and_cut():
    with smtp_server() as (port, inbox):
        send(sender(port, subject_prefix=''), 'a\r\nBcc: x@y.z' + 'x' * 300)
    subject = inbox.parsed()['Subject']
    assert subject.startswith('a Bcc: x@y.z') and len(subject) == 200
    assert inbox.parsed()['Bcc'] is None


def test_starttls_with_auth_verifies_the_certificate(ca, ca_file):
    with smtp_server(tls_context=server_context(ca), require_starttls=True,
                     auth=True) as (port, inbox):
        send(sender(port, 'starttls', user=USER, password=PASSWORD, ca_file=ca_file))
    [(_, tls, login)] = inbox.mails
    assert tls and login and inbox.logins == [True]


def test_starttls_without_credentials_still_starts_tls(ca, ca_file):
    # The server refuses MAIL before STARTTLS: a mail arrives only through TLS.
    with smtp_server(tls_context=server_context(ca), require_starttls=True) as (port, inbox):
        IOLoop().run_sync(lambda: sender(port, 'starttls', ca_file=ca_file).send('s', 't'))
    [(_, tls, login)] = inbox.mails
    assert tls and not login


def test_starttls_refused_when_the_server_does_not_offer_it(ca_file):
    with smtp_server() as (port, inbox):
        with pytest.raises(SmtpError, match='at starttls.*STARTTLS'):
            send(sender(port, 'starttls', ca_file=ca_file))
    assert inbox.mails == []


def test_implicit_tls(ca, ca_file):
    with smtp_server(ssl_context=server_context(ca)) as (port, inbox):
        send(sender(port, 'tls', ca_file=ca_file))
    assert inbox.mails[0][1] is True


def test_untrusted_certificate_refused_unless_told_not_to_verify(ca_file):
    stranger = trustme.CA()  # the sender trusts ``ca`` only
    with smtp_server(ssl_context=server_context(stranger)) as (port, inbox):
        with pytest.raises(SmtpError, match='at connect.*CERTIFICATE_VERIFY_FAILED'):
            send(sender(port, 'tls', ca_file=ca_file))
        assert inbox.mails == []
        send(sender(port, 'tls', verify=False))
    assert len(inbox.mails) == 1


def test_certificate_for_another_host_refused(ca, ca_file):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert('mail.example.org').configure_cert(context)  # trusted, not 127.0.0.1
    with smtp_server(ssl_context=context) as (port, inbox):
        with pytest.raises(SmtpError, match='at connect.*(mismatch|match)'):
            send(sender(port, 'tls', ca_file=ca_file))
    assert inbox.mails == []


def test_wrong_password_raises_without_showing_it(ca, ca_file, caplog):
    caplog.set_level(logging.DEBUG)
    with smtp_server(tls_context=server_context(ca), auth=True) as (port, inbox):
        with pytest.raises(SmtpError, match='at login') as raised:
            send(sender(port, 'starttls', user=USER, password=WRONG, ca_file=ca_file))
    assert inbox.mails == [] and inbox.logins and not any(inbox.logins)
    error = raised.value
    assert error.__cause__ is None and error.__suppress_context__
    encoded = base64.b64encode(WRONG.encode()).decode()
    assert WRONG not in str(error) and WRONG not in repr(error.args)
    assert encoded not in str(error)
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or '')
        assert WRONG not in text, record


def test_server_down_raises_at_once():
    smtp = sender(free_port(), timeout=30)
    with pytest.raises(SmtpError, match='at connect') as raised:
        send(smtp)
    # Refused, not waited out: the error is the refusal's, not the timeout's.
    assert not re.search('no answer within|[Tt]imed out', str(raised.value)), raised.value


def test_silent_server_raises_after_the_timeout():
    with socket.socket() as listener:  # accepts connections, never says a word
        port = free_port()
        listener.bind(('127.0.0.1', port))
        listener.listen(4)
        smtp = sender(port, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(SmtpError, match=r'at connect.*(0\.3 s|[Tt]imed out)'):
            send(smtp)
        # Waited out the 0.3 s, not the default 30 s (a loaded machine adds a little).
        assert 0.25 < time.monotonic() - started < 5


@pytest.mark.parametrize('option, value', [
    ('host', 'bad host'), ('port', 70000), ('port', 'x'), ('tls', 'ssl'),
    ('mail_from', 'nobody'), ('mail_to', ''), ('mail_to', ['ops@example.org', 'x y']),
    ('mail_from', 'a@b\nBcc: c@d'), ('timeout', 0), ('user', 'u'),
])
def test_bad_options_are_config_errors_naming_them(option, value):
    options = dict(host='127.0.0.1', mail_from='c@example.org', mail_to='o@example.org')
    options[option] = value
    names = {'host': 'smtp_host', 'port': 'smtp_port', 'tls': 'smtp_tls',
             'timeout': 'smtp_timeout', 'user': 'smtp_password'}
    with pytest.raises(ConfigError, match=names.get(option, option)):
        SmtpSender(**options)


def test_unreadable_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match='smtp_ca_file'):
        SmtpSender('127.0.0.1', tls='tls', mail_from='c@example.org',
                   mail_to='o@example.org', ca_file=str(tmp_path / 'missing.pem'))


def test_default_ports_by_tls_mode():
    ports = [SmtpSender('127.0.0.1', None, tls, mail_from='c@example.org',
                        mail_to='o@example.org').port for tls in ('none', 'starttls', 'tls')]
    assert ports == [25, 587, 465]


def test_missing_aiosmtplib_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'aiosmtplib', None)
    with pytest.raises(PluginLoadError) as raised:
        import_aiosmtplib('alerts')
    assert 'pip install circus-plugins[alerts]' in str(raised.value)
    assert '\n' not in str(raised.value)
