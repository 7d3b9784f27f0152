"""The alerts plugin under a real circusd 0.19, sending to real servers on 127.0.0.1: an SMTP
server (aiosmtpd, STARTTLS and AUTH) and a webhook receiver (tornado)."""
import json
import logging
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins.alerts import Alerts
from circus_plugins.errors import ConfigError
from circus_plugins.events import plugin_event
from circus_plugins.testing import (PluginProcess, ScriptedCircusd, free_port, run_on_loop,
                                    wait_for)
from conftest import MARKER, PLUGIN_ENV, heard, plugin_running, untrusted_events
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


def running(circusd, **options):
    """An Alerts plugin on ``circusd``, with the short intervals of :data:`FAST`."""
    return plugin_running(Alerts, circusd, **dict(FAST, webhook_format='json', **options))


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
    assert PASSWORD not in text and TOKEN not in str(body)
    for record in caplog.records:  # no password, no webhook token, in any log line
        line = record.getMessage() + (record.exc_text or '')
        assert PASSWORD not in line and TOKEN not in line, line


def test_a_recovery_notice_after_running_quietly(start_circusd, tmp_path, receiver):
    # circusd reaps and respawns flaky at each check: every 0.3 s, not every second.
    circusd = start_circusd(watchers={'flaky': recovering(tmp_path, crashes=2)},
                            circus={'check_delay': 0.3})
    with running(circusd, webhook_url=receiver.url, group_wait=0.5):
        [recovered] = wait_for(lambda: about(receiver, 'flaky', 'recovered'), timeout=8,
                               what='the recovery notice')
    first = about(receiver, 'flaky')[0]
    assert first['kind'] == 'crash' and 'exit code 1' in first['text']
    assert recovered['title'] == 'flaky recovered'
    assert facts(recovered)['events'] == '2 crash'
    assert circusd.status('flaky') == 'active'


def pending(plugin):
    """What the plugin holds to send, now or later."""
    return run_on_loop(plugin.loop, lambda: {w: ep.items for w, ep in
                                             plugin.grouper._episodes.items()})


def seen_after(circusd, plugin):
    """Return once the plugin has handled every event circusd published so far."""
    heard(circusd, lambda: run_on_loop(plugin.loop, lambda: len(getattr(
        plugin._watchers.get('marker'), 'spawned', ()))))


def test_an_operators_commands_and_circusds_shutdown_send_nothing(start_circusd, receiver):
    circusd = start_circusd(watchers={'web': dict(HEALTHY, numprocesses=2),
                                      'marker': MARKER})
    with running(circusd, webhook_url=receiver.url) as plugin:
        seen_after(circusd, plugin)  # it hears circusd: no kill before a reap is missed
        for command in ('restart', 'decr', 'incr', 'stop', 'start'):
            circusd.call(command, name='web')
        with open(circusd.ini_path) as ini:   # a changed command: reloadconfig replaces it
            text = ini.read()
        with open(circusd.ini_path, 'w') as ini:
            ini.write(text.replace('sleep 1000', 'sleep 1001'))
        circusd.call('reloadconfig')
        wait_for(lambda: len(circusd.pids('web')) == 2, what='web after reloadconfig')
        seen_after(circusd, plugin)
        assert not pending(plugin)  # nothing to send, now or later
        pids = circusd.pids('web')
        circusd.call('quit')
        wait_for(lambda: run_on_loop(plugin.loop, lambda: not set(pids) & set(
            plugin._watchers['web'].spawned)), what='the reaps of the shutdown')
        assert not pending(plugin)
        circusd.process.wait(5)
    assert receiver.bodies() == [], receiver.bodies()


def test_a_storm_stays_within_its_bound(start_circusd, tmp_path, receiver):
    """10 watchers crashing up to five times a second: at most 1 + T // group_interval
    messages per watcher in T seconds, fewer than the crashes."""
    names = ['w%d' % n for n in range(10)]
    circusd = start_circusd(watchers={name: crasher(tmp_path, name) for name in names},
                            circus={'check_delay': 0.2})
    began = time.monotonic()  # T: from before the plugin starts to after it has stopped
    with running(circusd, webhook_url=receiver.url, group_wait=0.3, group_interval=1.5,
                 recovery_after=100, fold_watchers=0) as plugin:
        wait_for(lambda: len(receiver.bodies()) >= 10 + 10, timeout=8,
                 what='two messages per watcher')
        wait_for(lambda: run_on_loop(plugin.loop, lambda: sum(
            plugin.grouper._episodes[w].totals.get('crash', 0)
            for w in plugin.grouper._episodes)) >= 150, timeout=8, what='150 crashes')
        crashes = run_on_loop(plugin.loop, lambda: sum(
            ep.totals.get('crash', 0) for ep in plugin.grouper._episodes.values()))
    ended = time.monotonic()
    bound = 1 + (ended - began) // 1.5
    for name in names:
        mine = about(receiver, name)
        assert 1 <= len(mine) <= bound, (name, len(mine), bound)
        told = sum(int(f['value'].split()[0]) for b in mine for f in b['facts']
                   if f['name'] == 'events')
        assert told <= crashes
    # How many crashes a second a loaded machine makes varies; the messages are bounded
    # by time alone, and within the deadlines above that is fewer than 150.
    assert len(receiver.bodies()) < crashes


def test_mail_server_down_then_up_gets_every_alert_in_order(start_circusd, tmp_path,
                                                             receiver, caplog):
    port = free_port()
    circusd = start_circusd(watchers={'a': crasher(tmp_path, 'a'), 'b': crasher(tmp_path, 'b')})
    with running(circusd, webhook_url=receiver.url, smtp_host='127.0.0.1', smtp_port=port,
                 smtp_tls='none', mail_to='ops@example.org', group_interval=0.5):
        wait_for(lambda: len(receiver.bodies()) >= 4, timeout=6, what='4 alerts by webhook')
        with smtp_server(port=port) as (_, inbox):
            told = [body['text'] for body in receiver.bodies()]  # each names its pids
            wait_for(lambda: len(inbox.mails) >= len(told), timeout=5,
                     what='the mails once the server is up')
            mails = [inbox.parsed(n).get_content() for n in range(len(told))]
    assert all(text in mail for text, mail in zip(told, mails)), (told, mails)
    failures = [r for r in caplog.records if 'sending failed (' in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(failures) == 1 and 'mail to 127.0.0.1:%d' % port in failures[0].getMessage()


def test_a_429_retry_after_is_honoured(start_circusd, tmp_path, receiver):
    receiver.answers = [(429, {'Retry-After': '1'})]
    circusd = start_circusd(watchers={'crasher': crasher(tmp_path)})
    with running(circusd, webhook_url=receiver.url, retry_delay=0.05):
        wait_for(lambda: about(receiver, 'crasher'), timeout=6, what='the alert, after 429')
    first, second = receiver.attempts[:2]
    assert second - first >= 0.95  # not the 0.05 s of retry_delay


def test_flappings_giveup_in_the_same_host_is_alerted_as_such(start_circusd, tmp_path,
                                                              receiver):
    # Deaths every 0.3 s (circusd reaps at each check): Flapping's two deaths, retry and
    # two more deaths take about 2 s, not 5 s, of the 9 s waited.
    circusd = start_circusd(watchers={'flaky': {'cmd': sys.executable + ' -c "exit(3)"'}},
                            circus={'check_delay': 0.3})
    sections = {
        'flapping': {'use': 'circus_plugins.flapping.Flapping', 'attempts': 2, 'window': 1,
                     'retry_in': 0.5, 'max_retry': 1},
        'alerts': dict(FAST, use='circus_plugins.alerts.Alerts', webhook_url=receiver.url,
                       webhook_format='json', group_interval=0.5),
    }
    text = '[circus]\nendpoint = %s\npubsub_endpoint = %s\ncheck_delay = 1\n\n' % (
        circusd.endpoint, circusd.pubsub_endpoint)
    for name, options in sections.items():
        text += '[plugin:%s]\n%s\n\n' % (name, '\n'.join('%s = %s' % o for o in options.items()))
    ini = tmp_path / 'plugins.ini'
    ini.write_text(text)
    with PluginProcess('', circusd, args=['--ini', str(ini), '--all'], env=PLUGIN_ENV):
        [giveup] = wait_for(lambda: about(receiver, 'flaky', 'flapping_giveup'), timeout=9,
                            what='the give-up alert')
    assert giveup['title'] == 'flaky stopped for good: it kept crashing (flapping)'
    assert 'flapping_giveup' in facts(giveup)['events']
    assert '(flapping: attempts=1, max_retry=1)' in giveup['text']
    # circusd answers a stop at once and ends the processes afterwards.
    wait_for(lambda: circusd.status('flaky') == 'stopped', what='flaky stopped')
    assert about(receiver, 'flaky', 'recovered') == []  # it is down, not recovered


def test_circusd_stopping_a_watcher_by_itself_is_alerted(start_circusd, tmp_path, receiver):
    script = tmp_path / 'once.sh'  # runs once, then cannot be executed any more
    script.write_text('#!/bin/sh\nchmod -x "$0"\nexit 1\n')
    script.chmod(0o755)
    circusd = start_circusd(watchers={'once': {'cmd': str(script)}, 'marker': MARKER})
    with running(circusd, webhook_url=receiver.url) as plugin:
        [stopped] = wait_for(lambda: about(receiver, 'once', 'stopped'), timeout=6,
                             what='the stopped alert')
        circusd.call('stop', name='marker')  # an operator's stop of another: nothing
        seen_after(circusd, plugin)
    assert stopped['title'] == 'once stopped by circusd: it could not start it again'
    assert facts(stopped)['events'] == '1 crash, 1 stopped'
    assert circusd.status('once') == 'stopped'
    assert about(receiver, 'marker') == []


def test_a_muted_watcher_sends_nothing_and_a_past_mute_is_over(start_circusd, tmp_path,
                                                                receiver):
    circusd = start_circusd(watchers={
        'quiet': crasher(tmp_path, 'quiet', **{'alerts.mute': 'true'}),
        'loud': crasher(tmp_path, 'loud', **{'alerts.mute': '2000-01-01T00:00'})})
    with running(circusd, webhook_url=receiver.url) as plugin:
        wait_for(lambda: about(receiver, 'loud'), timeout=6, what="loud's alert")
        wait_for(lambda: run_on_loop(plugin.loop, lambda: plugin.grouper.untold('quiet')),
                 what="quiet's crashes counted as muted")
        assert not run_on_loop(plugin.loop, lambda: 'quiet' in plugin.grouper._episodes)
    assert about(receiver, 'quiet') == []


def test_output_not_in_a_file_is_said(start_circusd, tmp_path, receiver):
    watcher = crasher(tmp_path)
    del watcher['stdout_stream.class'], watcher['stdout_stream.filename']
    circusd = start_circusd(watchers={'crasher': watcher})
    with running(circusd, webhook_url=receiver.url):
        [body] = wait_for(lambda: about(receiver, 'crasher'), timeout=6, what='the alert')
    assert body['output'] == []
    assert facts(body)['output'] == ("circusd does not write this watcher's stdout or "
                                     "stderr to a file")


def test_a_plugin_section_run_by_circusd_alerts(start_circusd, tmp_path, receiver):
    options = dict(FAST, use='circus_plugins.alerts.Alerts', webhook_url=receiver.url,
                   webhook_format='json')
    circusd = start_circusd(watchers={'crasher': crasher(tmp_path)},
                            plugins={'alerts': options})
    [body] = wait_for(lambda: about(receiver, 'crasher'), timeout=8, what='the alert')
    assert body['output'][-1].startswith('last words of ')
    assert circusd.status('plugin:alerts') == 'active'


# -- rules, with circusd's replies scripted --------------------------------------------

NOWHERE = ('tcp://127.0.0.1:%d' % free_port(), 'tcp://127.0.0.1:%d' % free_port())


def scripted(receiver, options=None, **config):
    """An Alerts plugin fed by hand; ``options`` is what circusd's ``options`` says."""
    settings = dict(FAST, webhook_url=receiver.url, webhook_format='json')
    settings.update(config)
    plugin = Alerts(*NOWHERE, 1.0, **{k: str(v) for k, v in settings.items()})
    reply = {'status': 'ok', 'options': options or {}}
    return ScriptedCircusd(plugin, {'options': reply, 'list': {'status': 'ok',
                                                               'watchers': []}})


def test_run_time_and_signal_come_from_spawn_and_reap(receiver):
    now = time.time()
    with scripted(receiver) as circusd:
        circusd.feed('web', 'spawn', process_pid=10, time=now - 2.5)
        circusd.feed('web', 'reap', process_pid=10, time=now, exit_code=-9)
        [body] = wait_for(lambda: about(receiver, 'web'), what='the alert')
        assert circusd.escaped == []
    assert 'pid 10, killed by SIGKILL, ran 2.5 s' in body['text']


def test_watchers_in_trouble_together_share_one_message(receiver):
    names = ['db-%d' % n for n in range(5)]
    with scripted(receiver, group_wait=0.3, recovery_after=0.6) as circusd:
        now = time.time()
        reaps = [(('watcher.%s.reap' % name).encode(), json.dumps(
            {'process_pid': pid, 'time': now, 'exit_code': 1}).encode())
            for pid, name in enumerate(names + ['giveup'], 10)]
        # An outage: all crash in one pass of the loop, however slow the machine.
        circusd.feed_raw(*reaps, plugin_event('flapping', 'giveup', 'flapping_giveup'))
        wait_for(lambda: len(receiver.bodies()) >= 2, what='the alert and the recoveries')
        assert circusd.escaped == []
    alert, recovered = receiver.bodies()[:2]
    assert alert['title'] == '6 watchers: db-0, db-1, db-2, db-3, db-4, ...'
    assert alert['watcher'] is None and alert['kind'] == 'flapping_giveup'
    lines = alert['text'].splitlines()
    assert lines[0].startswith('giveup stopped for good') and len(lines) == 6
    assert lines[1] == 'db-0 crashed (1 crash)'
    assert recovered['title'] == '5 watchers: db-0, db-1, db-2, db-3, db-4'
    assert recovered['kind'] == 'recovered' and len(receiver.bodies()) == 2


def test_a_down_watcher_recovers_only_once_it_runs_again(receiver):
    giveup = plugin_event('flapping', 'web', 'flapping_giveup', attempts=5, max_retry=5)
    with scripted(receiver, recovery_after=0.2, repeat_interval=1000) as circusd:
        circusd.feed_raw(giveup)
        wait_for(lambda: about(receiver, 'web'), what='the give-up alert')
        circusd.elapse(0.5)                  # down: no recovery however long it lasts
        assert [b['kind'] for b in about(receiver, 'web')] == ['flapping_giveup']
        circusd.feed('web', 'start', time=time.time())
        wait_for(lambda: about(receiver, 'web', 'recovered'), what='the recovery')
        assert circusd.escaped == []


def test_output_of_both_files_and_a_bad_mute_is_ignored_by_name(receiver, tmp_path, caplog):
    (tmp_path / 'out').write_text('one\ntwo\n')
    (tmp_path / 'err').write_text('oops\n')
    options = {'stdout_stream_conf': {'filename': str(tmp_path / 'out')},
               'stderr_stream_conf': {'filename': str(tmp_path / 'err')},
               'alerts.mute': 'sometimes'}
    with scripted(receiver, options) as circusd:
        circusd.feed('web', 'reap', process_pid=10, time=time.time(), exit_code=2)
        [body] = wait_for(lambda: about(receiver, 'web'), what='the alert')
    assert body['output'] == ['==> stderr <==', 'oops', '==> stdout <==', 'one', 'two']
    assert ("web': option alerts.mute ignored: 'sometimes' is neither true/false nor a date"
            in caplog.text)


def test_untrusted_events_never_escape_and_alerts_still_flow(receiver):
    events = untrusted_events(['spawn', 'reap', 'kill', 'stop', 'start', 'add', 'remove',
                               'updated', 'crash', 'flapping_giveup'])
    with scripted(receiver) as circusd:
        @settings(max_examples=150, deadline=None)
        @given(st.lists(events, max_size=6))
        def feed(given_events):
            circusd.feed_raw(*given_events)
        feed()
        assert circusd.escaped == []
        circusd.feed('after', 'reap', process_pid=10, time=time.time(), exit_code=1)
        wait_for(lambda: about(receiver, 'after'), what='an alert after the junk')


@pytest.mark.parametrize('config, says', [
    ({}, 'nowhere to send alerts'),
    ({'webhook_url': 'ftp://x'}, "option 'webhook_url'"),
    ({'webhook_url': 'http://x/1', 'webhook_format': 'irc'}, "'irc' is not one of"),
    ({'webhook_url': 'http://x/1 http://x/2', 'webhook_format': 'json slack teams'},
     '3 formats for 2 webhook_url'),
    ({'webhook_url': 'http://x/1', 'events': 'crash, bad kind!'}, "option 'events'"),
    ({'webhook_url': 'http://x/1', 'group_interval': '0'}, '0 < group_interval'),
    ({'webhook_url': 'http://x/1', 'watchers': 're:(('}, "option 'watchers'"),
    ({'smtp_host': '127.0.0.1'}, "option 'mail_to': needed"),
    ({'mail_to': 'ops@example.org'}, "option 'smtp_host': needed"),
    ({'smtp_host': '127.0.0.1', 'mail_to': 'nobody'}, "option 'mail_to': 'nobody'"),
])
def test_bad_options_are_refused_naming_them(config, says):
    with pytest.raises(ConfigError) as raised:
        Alerts(*NOWHERE, 1.0, **config)
    assert str(raised.value).startswith('plugin alerts: ') and says in str(raised.value)


def test_watchers_and_events_filters(receiver):
    giveup = plugin_event('flapping', 'web-2', 'flapping_giveup')
    with scripted(receiver, watchers='web-*', events='flapping_giveup') as circusd:
        circusd.feed('db', 'reap', process_pid=10, time=time.time(), exit_code=1)
        circusd.feed('web-1', 'reap', process_pid=11, time=time.time(), exit_code=1)
        circusd.feed_raw(giveup, plugin_event('flapping', 'db', 'flapping_giveup'))
        wait_for(lambda: receiver.bodies(), what='the give-up alert')
        circusd.elapse(0.5)  # past group_wait: anything else would have gone out
    assert [(b['watcher'], b['kind']) for b in receiver.bodies()] == [
        ('web-2', 'flapping_giveup')]


def test_each_webhook_gets_the_alert_in_its_format(receiver):
    with scripted(receiver, webhook_url='%s&a=1 %s&b=2' % (receiver.url, receiver.url),
                  webhook_format='slack, teams') as circusd:
        circusd.feed('web', 'reap', process_pid=10, time=time.time(), exit_code=1)
        wait_for(lambda: len(receiver.bodies()) == 2, what='both webhooks')
    shapes = sorted(next(iter(body)) for body in receiver.bodies())
    assert shapes == ['text', 'type']  # slack's {"text", "blocks"}, teams' {"type": ...}
