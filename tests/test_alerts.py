"""The alerts plugin under a real circusd 0.19, sending to real servers on 127.0.0.1: an SMTP
server (aiosmtpd, STARTTLS and AUTH) and a webhook receiver (tornado)."""
import contextlib
import logging
import sys

import pytest

from circus_plugins.alerts import Alerts
from circus_plugins.testing import free_port, run_on_loop, wait_for
from receivers import PASSWORD, TOKEN, USER, server_context, smtp_server

HEALTHY = {'cmd': 'sleep 1000'}
FAST = dict(group_wait=0.3, group_interval=1, recovery_after=1.5, retry_delay=0.05,
            max_retry_delay=0.2)


def crasher(tmp_path, name='crasher', code=3, **options):
    """A watcher whose process prints to stdout and stderr and exits with ``code``; its
    stdout goes to ``<name>.log`` (a FileStream) unless ``options`` say otherwise."""
    script = tmp_path / (name + '.sh')
    script.write_text('echo "starting $$"\necho "error: database unreachable" >&2\n'
                      'echo "last words of $$"\nexit %d\n' % code)
    watcher = {'cmd': 'sh %s' % script, 'stdout_stream.class': 'FileStream',
               'stdout_stream.filename': str(tmp_path / (name + '.log'))}
    watcher.update(options)
    return watcher


def recovering(tmp_path, crashes=2):
    """A watcher whose first ``crashes`` processes exit with 1, the next one runs."""
    count = tmp_path / 'count'
    script = tmp_path / 'recovering.sh'
    script.write_text('n=$(cat %s 2>/dev/null || echo 0)\necho $((n + 1)) > %s\n'
                      '[ "$n" -ge %d ] && exec sleep 1000\nexit 1\n' % (count, count, crashes))
    return {'cmd': 'sh %s' % script}


@contextlib.contextmanager
def running(circusd, **options):
    """An Alerts plugin on ``circusd``, with the short intervals of :data:`FAST`."""
    config = dict(FAST, webhook_format='json')
    config.update(options)
    plugin = Alerts(circusd.endpoint, circusd.pubsub_endpoint, 1.0,
                    **{k: str(v) for k, v in config.items()})
    plugin.start_background()
    try:
        yield plugin
    finally:
        plugin.stop()


def about(receiver, watcher, kind=None):
    return [body for body in receiver.bodies() if body['watcher'] == watcher
            and (kind is None or body['kind'] == kind)]


def facts(body):
    return {fact['name']: fact['value'] for fact in body['facts']}


def test_a_crash_arrives_by_mail_and_webhook_with_exit_code_and_last_lines(
        start_circusd, tmp_path, receiver, ca, ca_file, caplog):
    caplog.set_level(logging.DEBUG)
    circusd = start_circusd(watchers={'crasher': crasher(tmp_path), 'healthy': HEALTHY})
    with smtp_server(tls_context=server_context(ca), auth=True) as (port, inbox):
        with running(circusd, webhook_url=receiver.url, smtp_host='127.0.0.1',
                     smtp_port=port, smtp_user=USER, smtp_password=PASSWORD,
                     smtp_ca_file=ca_file, mail_to='ops@example.org',
                     mail_from='circus@example.org', hostname='web1'):
            [body] = wait_for(lambda: about(receiver, 'crasher'), timeout=6,
                              what='a webhook alert about crasher')
            wait_for(lambda: inbox.mails, what='the mail')
    assert body['kind'] == 'crash' and body['title'].startswith('crasher crashed')
    assert facts(body)['host'] == 'web1' and 'exit code 3' in body['text']
    assert body['output'][-1].startswith('last words of ')
    pid = body['output'][-1].split()[-1]
    assert 'pid %s, exit code 3' % pid in body['text']  # the output is the crash's own
    assert facts(body)['output of'].startswith('pid %s, stdout ' % pid)
    envelope, tls, authenticated = inbox.mails[0]
    assert tls and authenticated and envelope.rcpt_tos == ['ops@example.org']
    mail = inbox.parsed(0)
    assert mail['Subject'] == '[circus] ' + body['title']
    text = mail.get_content()
    assert 'exit code 3' in text and '    last words of %s' % pid in text
    assert about(receiver, 'healthy') == []
    for record in caplog.records:  # no password, no webhook token, in any log line
        line = record.getMessage() + (record.exc_text or '')
        assert PASSWORD not in line and TOKEN not in line, line


def test_a_recovery_notice_after_running_quietly(start_circusd, tmp_path, receiver):
    circusd = start_circusd(watchers={'flaky': recovering(tmp_path, crashes=2)})
    with running(circusd, webhook_url=receiver.url, group_wait=0.5):
        [recovered] = wait_for(lambda: about(receiver, 'flaky', 'recovered'), timeout=8,
                               what='the recovery notice')
    first = about(receiver, 'flaky')[0]
    assert first['kind'] == 'crash' and 'exit code 1' in first['text']
    assert recovered['title'] == 'flaky recovered'
    assert facts(recovered)['events'] == '2 crash'
    assert circusd.status('flaky') == 'active'


def pending(plugin):
    """Whether the plugin holds anything to send, now or later."""
    return run_on_loop(plugin.loop, lambda: bool(plugin.grouper._episodes))


def seen_after(circusd, plugin):
    """Return once the plugin has handled every event circusd published so far: it
    has seen a ``marker`` process spawned after them (events come in order)."""
    circusd.call('start', name='marker')
    [pid] = wait_for(lambda: circusd.pids('marker'), what='the marker process')
    wait_for(lambda: run_on_loop(plugin.loop, lambda: pid in getattr(
        plugin._watchers.get('marker'), 'spawned', ())), what='the marker spawned')
    circusd.call('stop', name='marker')


MARKER = dict(HEALTHY, autostart=False)


def test_an_operators_stop_restart_and_decr_send_nothing(start_circusd, receiver):
    circusd = start_circusd(watchers={'web': dict(HEALTHY, numprocesses=2),
                                      'marker': MARKER})
    with running(circusd, webhook_url=receiver.url) as plugin:
        for command in ('restart', 'decr', 'incr', 'stop', 'start', 'stop'):
            circusd.call(command, name='web')
        seen_after(circusd, plugin)
        assert not pending(plugin)  # nothing to send, now or later
    assert receiver.bodies() == []
