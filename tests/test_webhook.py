"""Webhooks: each format as a receiver gets it, 429 and a receiver down, through the outbox."""
import logging

from circus_plugins.alerts._outbox import Outbox
from circus_plugins.alerts._webhook import Notice, Webhook, retry_after_seconds
from circus_plugins.testing import wait_for
from conftest import modules_loaded
from receivers import TOKEN, WebhookReceiver

NOTICE = Notice('web crashed', kind='crash', watcher='web', text='exit 3 after 2 s',
                facts=[('host', 'h1'), ('exit code', '3')], output=['boom <1>', 'bye'])


def post(loop, hook, notice, dropped=0):
    loop.call(lambda: hook.send(notice, dropped))


def test_slack_body(loop, receiver):
    hook = Webhook(receiver.url, 'slack')
    post(loop, hook, NOTICE, dropped=2)
    body = receiver.bodies()[0]
    assert body['text'].startswith('*web crashed*\nhost: h1\nexit code: 3\n')
    assert '```\nboom &lt;1&gt;\nbye\n```' in body['text']
    assert '2 earlier alert(s) dropped' in body['text']
    assert body['blocks'][0] == {'type': 'header',
                                 'text': {'type': 'plain_text', 'text': 'web crashed'}}
    assert body['blocks'][1]['fields'][1]['text'] == '*exit code*\n3'
    loop.call(hook.close)


def test_teams_body(loop, receiver):
    hook = Webhook(receiver.url, 'teams')
    post(loop, hook, NOTICE)
    body = receiver.bodies()[0]
    assert body['type'] == 'message'
    attachment, = body['attachments']
    assert attachment['contentType'] == 'application/vnd.microsoft.card.adaptive'
    card = attachment['content']
    assert (card['type'], card['version']) == ('AdaptiveCard', '1.4')
    assert card['body'][0]['text'] == 'web crashed'
    assert card['body'][1] == {'type': 'FactSet', 'facts': [
        {'title': 'host', 'value': 'h1'}, {'title': 'exit code', 'value': '3'}]}
    assert card['body'][3]['fontType'] == 'Monospace'
    loop.call(hook.close)


def test_json_body(loop, receiver):
    hook = Webhook(receiver.url, 'json')
    post(loop, hook, NOTICE, dropped=1)
    assert receiver.bodies()[0] == {
        'schema': 'circus-plugins/alert/1', 'title': 'web crashed', 'kind': 'crash',
        'watcher': 'web', 'text': 'exit 3 after 2 s',
        'facts': [{'name': 'host', 'value': 'h1'}, {'name': 'exit code', 'value': '3'}],
        'output': ['boom <1>', 'bye'], 'dropped': 1}
    loop.call(hook.close)


def test_retry_after_forms():
    assert retry_after_seconds('1') == 1.0
    assert retry_after_seconds('Wed, 21 Oct 2015 07:28:10 GMT', now=1445412480) == 10
    assert retry_after_seconds('soon') is None and retry_after_seconds(None) is None


def test_429_is_honoured_in_order(loop, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.answers.append((429, {'Retry-After': '1'}))
    hook = Webhook(receiver.url, 'json')
    outbox = loop.call(lambda: Outbox(hook.send, loop.loop, retry_delay=0.01,
                                      name='webhook ' + hook.shown_url))
    start = loop.call(loop.loop.time)
    loop.call(lambda: [outbox.put(Notice('n%d' % i)) for i in range(3)])
    wait_for(lambda: len(receiver.got) == 3, what='3 notices')
    assert [b['title'] for b in receiver.bodies()] == ['n0', 'n1', 'n2']
    assert receiver.got[0][0] - start >= 1.0
    loop.call(outbox.close)
    loop.call(hook.close)
    assert_no_token(caplog)


def test_receiver_down_then_up(loop, caplog):
    caplog.set_level(logging.DEBUG)
    receiver = WebhookReceiver(loop)                    # not listening yet: refused
    hook = Webhook(receiver.url, 'json', connect_timeout=1, request_timeout=2)
    outbox = loop.call(lambda: Outbox(hook.send, loop.loop, retry_delay=0.05,
                                      max_retry_delay=0.1))
    loop.call(lambda: [outbox.put(Notice('n%d' % i)) for i in range(3)])
    wait_for(lambda: outbox.failures >= 2, what='failures while down')
    receiver.start()
    try:
        wait_for(lambda: len(receiver.got) == 3, what='3 notices')
        assert [b['title'] for b in receiver.bodies()] == ['n0', 'n1', 'n2']
    finally:
        loop.call(outbox.close)
        loop.call(hook.close)
        receiver.stop()
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert_no_token(caplog)


def assert_no_token(caplog):
    for record in caplog.records:
        shown = record.getMessage() + (record.exc_text or '')
        assert TOKEN not in shown, shown
    assert TOKEN not in caplog.text


def test_tornados_http_client_is_loaded_for_a_webhook_only():
    # Alerts sent by mail alone do not carry tornado's HTTP client (about 0.7 MiB).
    build = ('from circus_plugins.alerts import Alerts\n'
             'Alerts("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 5.0, %s)')
    by_mail = modules_loaded(build % 'smtp_host="127.0.0.1", mail_to="ops@example.org"')
    assert 'circus_plugins.alerts._webhook' in by_mail and 'aiosmtplib' in by_mail
    assert 'tornado.httpclient' not in by_mail
    by_webhook = modules_loaded(build % 'webhook_url="https://hooks.example.org/T0/B0/x"')
    assert 'tornado.httpclient' in by_webhook
