"""PrometheusExporter under a real circusd 0.19, scraped by a real Prometheus server (Debian's)
and checked with promtool, on 127.0.0.1."""
import asyncio
import base64
import gzip
import logging
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from circus_plugins import ConfigError, PluginLoadError
from circus_plugins._usage import Usage
from circus_plugins.prometheus import RENDER_DELAY, PrometheusExporter
from circus_plugins.testing import CommandCounter, ScriptedCircusd, run_on_loop, wait_for
from conftest import MARKER, asked_since, heard, plugin_running, running_beside, untrusted_events
from receivers import PROMTOOL

WEB = {'cmd': 'sleep 1000', 'numprocesses': 2}


def exporting(circusd, **options):
    """An exporter on ``circusd`` on a free port, polling every 0.3 s."""
    return plugin_running(PrometheusExporter, circusd, **dict(
        dict(port=0, loop_rate=0.3), **options))


def target(plugin):
    return '127.0.0.1:%d' % plugin.bound_port


def scrape(plugin, headers=None, path='/metrics', scheme='http', **kwargs):
    request = urllib.request.Request('%s://%s%s' % (scheme, target(plugin), path),
                                     headers=headers or {})
    with urllib.request.urlopen(request, timeout=3, **kwargs) as reply:
        return reply.status, dict(reply.headers), reply.read()


def hears(circusd, plugin):
    """Return once the exporter has counted every event circusd published so far."""
    heard(circusd, lambda: sample(plugin, 'circus_watcher_spawns_total',
                                  watcher='marker') or 0)


class Scraped:
    """What the module's Prometheus holds of one exporter (its port, its instance)."""

    def __init__(self, prometheus, port):
        self.prometheus, self.instance = prometheus, '127.0.0.1:%d' % port

    def value(self, promql):
        """``promql``, with ``{...}`` of its metrics naming this instance."""
        return self.prometheus.value(promql.replace('{', '{instance="%s",' % self.instance))

    def equals(self, promql, wanted, timeout=8):
        return wait_for(lambda: self.value(promql) == wanted, timeout=timeout,
                        what='%s == %s' % (promql, wanted))


def test_prometheus_sees_processes_states_spawns_and_crashes(start_circusd, prometheus):
    circusd = start_circusd(watchers={
        'web': WEB, 'off': dict(WEB, autostart=False),
        'crasher': {'cmd': 'sh -c "exit 3"'}}, circus={'check_delay': 0.5})
    port = prometheus.take_port()
    with exporting(circusd, port=port):
        prom = Scraped(prometheus, port)
        prom.equals('circus_up{}', 1)
        prom.equals('circus_watcher_processes{watcher="web"}', 2)
        prom.equals('circus_watcher_desired_processes{watcher="web"}', 2)
        prom.equals('circus_watcher_state{watcher="off",state="stopped"}', 1)
        prom.equals('circus_watcher_state{watcher="off",state="active"}', 0)
        prom.equals('circus_watcher_processes{watcher="off"}', 0)
        prom.equals('circus_watcher_desired_processes{watcher="off"}', 2)  # configured
        crashes = 'circus_watcher_exits_total{watcher="crasher",reason="crash"}'
        first = wait_for(lambda: prom.value(crashes), timeout=6, what='a crash counted')
        wait_for(lambda: (prom.value(crashes) or 0) > first, timeout=6,
                 what='crashes to rise')
        # each crash, then its respawn (one scrape: the two counters of one moment)
        assert abs(prom.value('circus_watcher_spawns_total{watcher="crasher"} - ignoring'
                              '(reason) %s' % crashes)) <= 1
        wids = prometheus.query('circus_process_start_time_seconds{instance="%s",'
                                'watcher="web"}' % prom.instance)
        assert sorted(dict(labels)['wid'] for labels in wids) == ['1', '2']
        assert prom.value('circus_watcher_resident_memory_bytes{watcher="web"}') > 100000


def test_an_operators_restart_counts_as_stopped_not_crash(start_circusd, prometheus):
    circusd = start_circusd(watchers={'web': WEB, 'marker': MARKER})
    port = prometheus.take_port()
    with exporting(circusd, port=port) as plugin:
        prom = Scraped(prometheus, port)
        prom.equals('circus_watcher_processes{watcher="web"}', 2)
        hears(circusd, plugin)
        circusd.call('restart', name='web')
        prom.equals('circus_watcher_exits_total{watcher="web",reason="stopped"}', 2)
        assert prom.value('circus_watcher_exits_total{watcher="web",reason="crash"}') == 0
        assert prom.value('circus_watcher_spawns_total{watcher="web"}') == 2


def test_promtool_finds_no_problem_in_a_scraped_page(start_circusd):
    circusd = start_circusd(watchers={'web': WEB, 'crasher': {'cmd': 'sh -c "exit 3"'}})
    with exporting(circusd) as plugin:
        wait_for(lambda: b'circus_watcher_exits_total{reason="crash",watcher="crasher"} 1'
                 in scrape(plugin)[2], timeout=6, what='a crash on the page')
        _, headers, page = scrape(plugin)
    assert headers['Content-Type'].startswith('text/plain; version=0.0.4')
    checked = subprocess.run([PROMTOOL, 'check', 'metrics'], input=page,
                             capture_output=True, timeout=10)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == b'', checked


def families(page):
    """``{sample name + sorted labels: value}`` of a text-format page."""
    found = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            found[(sample.name,) + tuple(sorted(sample.labels.items()))] = sample.value
    return found


def sample(exporter, name, **labels):
    return families(scrape(exporter)[2]).get((name,) + tuple(sorted(labels.items())))


def test_counters_survive_a_circusd_restart_and_a_watcher_removed_and_added(start_circusd):
    circusd = start_circusd(watchers={'web': WEB, 'marker': MARKER})
    stopped = dict(watcher='web', reason='stopped')
    with exporting(circusd, call_timeout=0.5) as plugin:
        hears(circusd, plugin)
        circusd.call('restart', name='web')
        wait_for(lambda: sample(plugin, 'circus_watcher_exits_total', **stopped) == 2,
                 what='two processes stopped')
        wait_for(lambda: sample(plugin, 'circus_watcher_spawns_total', watcher='web') == 2,
                 what='two spawned')
        circusd.kill()                                # circusd gone: up 0, counts kept
        wait_for(lambda: sample(plugin, 'circus_up') == 0, what='circus_up 0')
        assert sample(plugin, 'circus_watcher_exits_total', **stopped) == 2
        assert sample(plugin, 'circus_watcher_spawns_total', watcher='web') == 2
        circusd.start()                               # (its start-up spawns may be missed)
        wait_for(lambda: sample(plugin, 'circus_up') == 1, what='circus_up 1 again')
        hears(circusd, plugin)
        spawns = sample(plugin, 'circus_watcher_spawns_total', watcher='web')
        circusd.call('restart', name='web')
        wait_for(lambda: sample(plugin, 'circus_watcher_exits_total', **stopped) == 4,
                 what='the new exits added to the old')
        wait_for(lambda: sample(plugin, 'circus_watcher_spawns_total', watcher='web') ==
                 spawns + 2, what='the new spawns added to the old')
        circusd.call('rm', name='web')
        wait_for(lambda: sample(plugin, 'circus_watcher_processes', watcher='web') is None,
                 what='a removed watcher without series')
        circusd.call('add', name='web', cmd='sleep 1000', start=True)
        wait_for(lambda: sample(plugin, 'circus_watcher_processes', watcher='web') == 1,
                 what='web back')
        # The processes come from a poll, the counts from events, on another socket:
        # wait until the events of the rm and the add are counted too.
        hears(circusd, plugin)
        assert sample(plugin, 'circus_watcher_exits_total', **stopped) == 6
        assert sample(plugin, 'circus_watcher_spawns_total', watcher='web') == spawns + 3


def test_at_rest_it_asks_only_status_and_events_make_only_the_questions_they_need(
        start_circusd):
    circusd = start_circusd(watchers={'web': WEB, 'db': WEB, 'off': dict(
        WEB, autostart=False)}, circus={'check_delay': 0.3})
    with CommandCounter(circusd.endpoint) as counter, exporting(SimpleNamespace(
            endpoint=counter.endpoint, pubsub_endpoint=circusd.pubsub_endpoint)) as plugin:
        def started(wid, watcher='web'):
            return sample(plugin, 'circus_process_start_time_seconds', watcher=watcher,
                          wid=wid)

        def asked(before, looks=3):
            return asked_since(counter, before, looks)

        plugin.safety_refresh = 1e9  # the spread refresh is not what is counted here
        wait_for(lambda: started('2') and started('2', 'db'), what='every process known')
        # Events of circusd's start that came while a first list was answered make that
        # watcher be asked again at the next poll: at rest once a poll asks nothing more.
        wait_for(lambda: asked(counter.snapshot(), looks=1) == {},
                 what='a poll asking only status')
        assert asked(counter.snapshot()) == {}              # at rest: status only
        before, first = counter.snapshot(), started('1')
        os.kill(circusd.pids('web')[0], signal.SIGKILL)           # a crash and its respawn
        wait_for(lambda: (started('1') or 0) > first and sample(
            plugin, 'circus_watcher_processes', watcher='web') == 2, what='the new process')
        assert asked(before) == {'stats': 1}                # its wid and start, once
        before = counter.snapshot()
        circusd.call('incr', name='web')
        wait_for(lambda: started('3') and sample(plugin, 'circus_watcher_desired_processes',
                                                 watcher='web') == 3, what='incr seen')
        assert sample(plugin, 'circus_watcher_processes', watcher='web') == 3
        assert asked(before) == {'get': 1, 'stats': 1}      # about web only
        before = counter.snapshot()
        circusd.call('decr', name='web')                          # publishes only kill
        wait_for(lambda: sample(plugin, 'circus_watcher_desired_processes',
                                watcher='web') == 2 and sample(
            plugin, 'circus_watcher_processes', watcher='web') == 2, what='decr seen')
        assert asked(before) == {'get': 1}


def test_with_circusd_stats_memory_comes_from_its_stream_unless_told_to_poll(start_circusd):
    import psutil
    # A Python process: its RSS, some megabytes, shows circus's rounding ('9.45M').
    sleeper = {'cmd': '%s -c "import time; time.sleep(1000)"' % sys.executable,
               'numprocesses': 2}
    circusd = start_circusd(watchers={'web': sleeper}, circus={'statsd': True})
    with CommandCounter(circusd.endpoint) as counter, exporting(SimpleNamespace(
            endpoint=counter.endpoint, pubsub_endpoint=circusd.pubsub_endpoint)) as streamed, \
            exporting(circusd, stats_source='poll') as polled:
        assert polled.stats_socket is None and streamed.stats_socket is not None

        def stream_rss():
            figures = run_on_loop(streamed.loop, lambda: streamed.figures.processes('web'))
            return len(figures) == 2 and sum(figure.rss for figure in figures.values())

        def psutil_rss():
            return sum(psutil.Process(pid).memory_info().rss for pid in circusd.pids('web'))

        def rss(plugin):
            return sample(plugin, 'circus_watcher_resident_memory_bytes', watcher='web')
        wait_for(lambda: stream_rss() and rss(streamed) == stream_rss(), timeout=8,
                 what="the stream's memory figures on the page")
        wait_for(lambda: rss(polled) == psutil_rss(), what="psutil's on the other")
        assert sample(streamed, 'circus_watcher_cpu_seconds_total', watcher='web') > 0
        # The safety refresh: a get of each watcher (web and circusd-stats), but no list
        # of web, whose processes the stream names as the events did (circusd-stats's
        # own watcher may be listed: whether the stream tells of it varies).
        before = counter.snapshot()
        run_on_loop(streamed.loop, streamed.refresh_everything)
        wait_for(lambda: counter.snapshot()['status'] >= before['status'] + 3, what='polls')
        after = counter.snapshot()
        assert after['get'] - before['get'] == 2
        assert after.get('list', 0) - before.get('list', 0) <= 1


def test_plugin_made_events_are_counted_when_run_beside_it(start_circusd):
    circusd = start_circusd(watchers={'web': WEB})
    with exporting(circusd) as plugin, running_beside(circusd) as other:
        other.emit('web', 'flapping', retry_in=7)
        other.emit('web', 'flapping', retry_in=7)
        wait_for(lambda: sample(plugin, 'circus_plugin_actions_total', plugin='other',
                                action='flapping', watcher='web') == 2,
                 what='two actions counted')


def test_format_and_compression_are_negotiated_and_families_chosen(start_circusd):
    circusd = start_circusd(watchers={'web': WEB})
    with exporting(circusd) as plugin:
        wait_for(lambda: sample(plugin, 'circus_watcher_processes', watcher='web') == 2)
        status, headers, body = scrape(plugin, {
            'Accept': 'application/openmetrics-text; version=1.0.0; charset=utf-8',
            'Accept-Encoding': 'gzip'})
        assert headers['Content-Type'].startswith('application/openmetrics-text')
        assert headers['Content-Encoding'] == 'gzip'
        text = gzip.decompress(body).decode()
        assert text.endswith('# EOF\n') and 'circus_watcher_spawns_total' in text
        _, _, body = scrape(plugin, path='/metrics?name[]=circus_up')
        assert body.decode().splitlines()[-1] == 'circus_up 1.0'
        assert 'circus_watcher' not in body.decode()
        with pytest.raises(urllib.error.HTTPError) as raised:
            scrape(plugin, path='/other')
        assert raised.value.code == 404


def test_basic_auth_and_tls_with_client_certificates(start_circusd, ca, tmp_path, caplog):
    server = ca.issue_cert('127.0.0.1')
    server.cert_chain_pems[0].write_to_path(str(tmp_path / 'cert.pem'))
    server.private_key_pem.write_to_path(str(tmp_path / 'key.pem'))
    ca.cert_pem.write_to_path(str(tmp_path / 'ca.pem'))
    client = ca.issue_cert('prometheus')
    circusd = start_circusd(watchers={'web': WEB})
    with exporting(circusd, basic_auth_user='prom', basic_auth_password=SECRET,
                   certfile=tmp_path / 'cert.pem', keyfile=tmp_path / 'key.pem',
                   client_cafile=tmp_path / 'ca.pem', client_auth_required=True) as plugin:
        context = ssl.create_default_context(cafile=str(tmp_path / 'ca.pem'))
        with pytest.raises((urllib.error.URLError, ssl.SSLError)):  # no client certificate
            scrape(plugin, scheme='https', context=context)
        client.configure_cert(context)
        with pytest.raises(urllib.error.HTTPError) as raised:  # no password
            scrape(plugin, scheme='https', context=context)
        assert raised.value.code == 401
        wrong = base64.b64encode(b'prom:wrong').decode()
        with pytest.raises(urllib.error.HTTPError):
            scrape(plugin, {'Authorization': 'Basic ' + wrong}, scheme='https',
                   context=context)
        right = base64.b64encode(('prom:' + SECRET).encode()).decode()
        status, _, body = scrape(plugin, {'Authorization': 'Basic ' + right},
                                 scheme='https', context=context)
        assert status == 200 and b'circus_up' in body
    assert SECRET not in caplog.text


SECRET = 'S3cret-scrape-passw0rd'


def test_a_plugin_section_run_by_circusd_serves_metrics(start_circusd):
    from circus_plugins.testing import free_port
    port = free_port()
    start_circusd(watchers={'web': WEB}, plugins={'prometheus': {
        'use': 'circus_plugins.prometheus.PrometheusExporter', 'port': port,
        'loop_rate': 0.3}})
    url = 'http://127.0.0.1:%d/metrics' % port

    def web_processes():
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return families(reply.read()).get(
                    ('circus_watcher_processes', ('watcher', 'web')))
        except OSError:
            return None
    assert wait_for(web_processes, timeout=8, what='the page from circusd\'s plugin') == 2


def test_a_port_in_use_is_a_clear_error(start_circusd):
    circusd = start_circusd(watchers={'web': WEB})
    with exporting(circusd) as plugin:
        other = PrometheusExporter(circusd.endpoint, circusd.pubsub_endpoint, 1.0,
                                   port=str(plugin.bound_port))
        with pytest.raises(ConfigError, match=r'plugin prometheus: cannot listen on '
                                              r'127\.0\.0\.1:\d+: Address already in use'):
            other.start_background()


@pytest.mark.parametrize('config, says', [
    ({'path': 'metrics'}, "option 'path'"),
    ({'basic_auth_user': 'u'}, 'basic_auth_user and basic_auth_password go together'),
    ({'certfile': '/nonexistent.pem'}, 'certfile and keyfile go together'),
    ({'certfile': '/nonexistent.pem', 'keyfile': '/nonexistent.key'}, 'cannot use certfile'),
    ({'client_auth_required': 'true'}, 'client certificates need certfile and keyfile'),
    ({'port': '70000'}, "option 'port'"),
    ({'host': 'bad host'}, "option 'host'"),
    ({'stats_source': 'sometimes'}, "option 'stats_source': 'sometimes' is not one of auto"),
])
def test_bad_options_are_refused_naming_them(config, says):
    with pytest.raises(ConfigError, match='^plugin prometheus: ') as raised:
        PrometheusExporter('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, **config)
    assert says in str(raised.value)


def test_without_prometheus_client_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'prometheus_client', None)
    with pytest.raises(PluginLoadError) as raised:
        PrometheusExporter('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0)
    assert str(raised.value).startswith('plugin prometheus needs prometheus_client and psutil')
    assert 'pip install circus-plugins[prometheus]' in str(raised.value)
    assert '\n' not in str(raised.value)


def scripted_exporter(**options):
    """An exporter for a ScriptedCircusd, which answers the poll's questions: without
    circusd-stats's stream (``globaloptions`` is not scripted)."""
    return PrometheusExporter('tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 1.0, port='0',
                              stats_source='poll', **options)


def poll_once(circusd, plugin):
    """Run one poll of ``plugin`` under the ScriptedCircusd ``circusd``; the commands it
    sent that were not ignored."""
    circusd.on_loop(lambda: plugin.loop.add_callback(plugin.look_now))
    circusd.settle()
    asked = []
    while not circusd.commands.empty():
        asked.append(circusd.next_command())
    return asked


def test_untrusted_events_and_replies_never_escape_and_the_page_still_renders(caplog):
    events = untrusted_events(['spawn', 'reap', 'kill', 'stop', 'flapping'])
    junk = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(
        st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.one_of(
            st.none(), st.integers(), st.text(max_size=5),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)), max_size=3))
    replies = {}
    plugin = scripted_exporter()
    with ScriptedCircusd(plugin, {
            'status': lambda **p: replies.get('status', {'status': 'ok', 'statuses': {}}),
            'list': lambda **p: replies.get('list', {'status': 'ok'}),
            'stats': lambda **p: replies.get('stats', {'status': 'ok'}),
            'get': lambda **p: replies.get('get', {'status': 'ok'})},
            ) as circusd:
        @settings(max_examples=100, deadline=None)
        @given(st.lists(events, max_size=5), junk, junk, junk, junk)
        def feed(given_events, statuses, pids, info, count):
            replies.update(status={'status': 'ok', 'statuses': statuses},
                           list={'status': 'ok', 'pids': pids},
                           stats={'status': 'ok', 'info': info},
                           get={'status': 'ok', 'options': {'numprocesses': count}})
            circusd.feed_raw(*given_events)
            circusd.on_loop(lambda: plugin.loop.add_callback(plugin.look_now))
            circusd.settle()
            page = scrape(plugin)[2]
            assert b'circus_up' in page and families(page)
        feed()
        assert circusd.escaped == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_odd_start_times_in_stats_leave_the_poll_working(caplog):
    infos = {10: {'pid': 10, 'wid': 1, 'started': 10 ** 400},
             11: {'pid': 11, 'wid': 2, 'started': float('nan')}}
    plugin = scripted_exporter()
    with ScriptedCircusd(plugin, {
            'status': {'status': 'ok', 'statuses': {'web': 'active'}},
            'list': {'status': 'ok', 'pids': [10, 11]},
            'stats': lambda name, process: {'status': 'ok', 'info': infos[process]},
            'get': {'status': 'ok', 'options': {'numprocesses': 2}}}) as circusd:
        circusd.on_loop(lambda: plugin.loop.add_callback(plugin.look_now))
        circusd.settle()
        assert sample(plugin, 'circus_watcher_processes', watcher='web') == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_process_stats_is_asked_once_not_every_watchers_at_every_poll():
    infos = {10: {'wid': 1, 'started': 100.0}, 11: {'wid': 2, 'started': 101.0}}
    plugin = scripted_exporter()
    with ScriptedCircusd(plugin, {
            'status': {'status': 'ok', 'statuses': {'web': 'active'}},
            'list': {'status': 'ok', 'pids': [10, 11]},
            'stats': lambda name, process: {'status': 'ok', 'info': infos[process]},
            'get': {'status': 'ok', 'options': {'numprocesses': 2}}},
            ignore=('status', 'list', 'get')) as circusd:
        def poll():
            return poll_once(circusd, plugin)
        poll()                        # the one at start may have run: start afresh
        circusd.feed('web', 'spawn', process_pid=10, time=100.0)  # pid 10 used again
        assert poll() == [('stats', {'name': 'web', 'process': 10})]
        assert poll() == []
        assert sample(plugin, 'circus_process_start_time_seconds', watcher='web',
                      wid='2') == 101.0


def test_a_process_found_ended_without_its_event_has_its_watcher_listed_again_once():
    pids, ended = [10, 11], set()

    class Reader:  # psutil, as it finds the processes
        gone = set()

        def read(self, keys):
            self.gone = {key for key in keys if key[0] in ended}
            return {key: Usage(1.0, 4096) for key in keys if key[0] not in ended}
    plugin = scripted_exporter()
    plugin.usage = Reader()
    with ScriptedCircusd(plugin, {
            'status': {'status': 'ok', 'statuses': {'web': 'active'}},
            'list': lambda name: {'status': 'ok', 'pids': list(pids)},
            'stats': lambda name, process: {'status': 'ok', 'info': {
                'wid': process - 9, 'started': 100.0}},
            'get': {'status': 'ok', 'options': {'numprocesses': 2}}},
            ignore=('status', 'stats', 'get')) as circusd:
        def poll():
            return poll_once(circusd, plugin)
        poll()                                 # the one at start may have run
        pids[:], ended = [10, 12], {11}        # 11 ended, 12 came: both events missed
        assert poll() == [] and poll() == []   # found ended; its reap may be on its way
        assert poll() == [('list', {'name': 'web'})]
        assert sample(plugin, 'circus_process_start_time_seconds', watcher='web',
                      wid='3') == 100.0
        pids[:], ended = [10, 12, 13], {13}    # circusd lists one psutil finds ended
        circusd.feed('web', 'spawn', process_pid=13, time=100.0)
        assert poll() == [] and poll() == [] and poll() == [('list', {'name': 'web'})]
        assert poll() == [] and poll() == []   # once, not at every poll


def test_a_page_scraped_before_is_rendered_again_ahead_of_the_next_scrape():
    plugin = scripted_exporter()
    with ScriptedCircusd(plugin, {
            'status': {'status': 'ok', 'statuses': {'web': 'active'}},
            'list': {'status': 'ok', 'pids': []},
            'get': {'status': 'ok', 'options': {'numprocesses': 1}}}) as circusd:
        circusd.settle()
        scrape(plugin)
        renders = plugin.pages.renders
        circusd.feed('web', 'spawn', process_pid=10, time=100.0)
        circusd.elapse(RENDER_DELAY + 0.05)
        assert plugin.pages.renders == renders + 1     # rendered with no one asking
        assert sample(plugin, 'circus_watcher_spawns_total', watcher='web') == 1
        assert plugin.pages.renders == renders + 1     # the scrape found it ready


def test_new_processes_stats_are_asked_within_a_budget_and_all_are_counted():
    async def slow_stats(name, process):
        await asyncio.sleep(0.03)              # as circusd scanning /proc for each
        return {'status': 'ok', 'info': {'wid': process - 9, 'started': 100.0 + process}}
    plugin = scripted_exporter(loop_rate='0.2')  # half of it: 0.1 s of stats a poll
    with ScriptedCircusd(plugin, {
            'status': {'status': 'ok', 'statuses': {'web': 'active'}},
            'list': {'status': 'ok', 'pids': list(range(10, 30))},
            'stats': slow_stats,
            'get': {'status': 'ok', 'options': {'numprocesses': 20}}},
            ignore=('status', 'list', 'get')) as circusd:
        circusd.settle()                                   # the poll at start is over
        assert 1 <= circusd.commands.qsize() <= 5          # not all 20 at once
        assert sample(plugin, 'circus_watcher_processes', watcher='web') == 20
        wait_for(lambda: sample(plugin, 'circus_process_start_time_seconds', watcher='web',
                                wid='20') == 129.0, what='every process known, in time')
