"""The --config codec, get_plugin_cmd and circus.ini sections."""
import json
import logging
import math
import shlex

import pytest

from circus_plugins import ConfigError, PluginLoadError, decode_config, encode_config, \
    get_plugin_cmd
from circus_plugins.config import LARGEST, add_secret, read_ini_plugin, redact_error, \
    redact_text, redact_url, to_bool, to_host, to_matcher, to_name, to_number, to_signum, \
    url_secrets
from circus_plugins.testing import wait_for

NASTY = {
    'plain': 'value',
    'spaces': 'a value  with spaces ',
    'quotes': 'it\'s "quoted"',
    'colon': 'http://127.0.0.1:8080/x',
    'triple': 'a:::b',
    'dollar': '$HOME $(circus.env.x) ${x}',
    'accents': 'évènement ✓',
    'empty': '',
    'newline': 'two\nlines',
}


@pytest.mark.parametrize('config', [{}, {'a': 'b'}, {'url': 'http://x:1/'}, NASTY]
                         + [{k: v} for k, v in NASTY.items()])
def test_round_trip(config):
    assert decode_config(encode_config(config)) == config


def test_circus_form_is_kept_when_it_round_trips():
    assert encode_config({'b': '2', 'a': 'x:y'}) == 'a:x:y:::b:2'
    assert decode_config('a: 1 :::b:2') == {'a': '1', 'b': '2'}
    assert json.loads(encode_config({'a': 'x:::y'})) == {'a': 'x:::y'}


@pytest.mark.parametrize('text, culprit', [
    ('novalue', 'novalue'), ('a:1:::', "''"), ('{"a": ', 'JSON'), ('[1]', "'[1]'"),
])
def test_bad_config_names_the_part(text, culprit):
    with pytest.raises(ConfigError, match=culprit.replace('[', r'\[')):
        decode_config(text)


def test_get_plugin_cmd():
    config = dict(NASTY, use='sample_plugins.ConfigDump')
    before = dict(config)
    cmd = get_plugin_cmd(config, 'tcp://127.0.0.1:1', 'tcp://127.0.0.1:2', 2.5, None,
                         loglevel='warning', logoutput='/tmp/x y.log')
    assert config == before
    args = shlex.split(cmd)
    assert args[1:3] == ['-m', 'circus_plugins']
    assert args[args.index('--check-delay') + 1] == '2.5'
    assert args[args.index('--log-output') + 1] == '/tmp/x y.log'
    assert args[-1] == 'sample_plugins.ConfigDump'
    assert decode_config(args[args.index('--config') + 1]) == NASTY
    debug = shlex.split(get_plugin_cmd(config, 'e', 'p', 5, 'me@host', debug=True))
    assert debug[debug.index('--log-level') + 1] == 'debug'
    assert debug[debug.index('--ssh') + 1] == 'me@host'


def test_get_plugin_cmd_refuses_bad_use():
    with pytest.raises(PluginLoadError, match='nowhere.Plugin'):
        get_plugin_cmd({'use': 'nowhere.Plugin'}, 'e', 'p', 5, None)
    with pytest.raises(ConfigError, match='use'):
        get_plugin_cmd({'name': 'x'}, 'e', 'p', 5, None)


def test_get_plugin_cmd_under_circusd_delivers_every_value(start_circusd, tmp_path):
    dump = tmp_path / 'dump.jsonl'
    circusd = start_circusd(watchers={'sleeper': {'cmd': 'sleep 1000'}})
    options = {k: v for k, v in NASTY.items() if '\n' not in v}
    cmd = get_plugin_cmd(dict(options, use='sample_plugins.ConfigDump', dump=str(dump)),
                         circusd.endpoint, circusd.pubsub_endpoint, 1.5, None)
    reply = circusd.call('add', name='dumper', cmd=cmd, start=True,
                          options={'copy_env': True})
    assert reply['status'] == 'ok', reply
    started = json.loads(wait_for(lambda: dump.exists() and dump.read_text(),
                                  what='the plugin to start').splitlines()[0])
    assert started['config'] == dict(options, dump=str(dump))
    assert started['check_delay'] == 1.5


def test_read_ini_plugin(tmp_path):
    ini = tmp_path / 'circus.ini'
    ini.write_text('[circus]\ncheck_delay = 2\n\n[plugin:log]\nuse = a.B\nfile = x y\n')
    plugin = read_ini_plugin(str(ini), 'log')
    assert plugin.use == 'a.B' and plugin.config == {'file': 'x y', 'name': 'plugin:log'}
    assert plugin.endpoint == 'tcp://127.0.0.1:5555'
    assert plugin.pubsub_endpoint == 'tcp://127.0.0.1:5556' and plugin.check_delay == 2.0
    with pytest.raises(ConfigError, match=r'\[plugin:other\]'):
        read_ini_plugin(str(ini), 'other')


def test_converters():
    assert to_bool('Yes') is True and to_bool('0') is False
    assert to_number('3', 'n', integer=True) == 3
    with pytest.raises(ConfigError, match="'n'.*'x'"):
        to_number('x', 'n')
    with pytest.raises(ConfigError, match='below'):
        to_number('-1', 'n', minimum=0)


@pytest.mark.parametrize('value', [
    'nan', 'NaN', '-nan', 'inf', '-inf', 'Infinity', '1e400', float('nan'), float('inf'),
    '1_000', '\uff15', '\u0665', '0x10', '1e', '.', '', ' ', '--1', '1 2', True,
    str(LARGEST * 2), 2 ** 60, '9' * 5000,
])
def test_to_number_refuses_what_is_not_a_plain_finite_number(value):
    with pytest.raises(ConfigError) as info:
        to_number(value, 'n')
    assert "option 'n': %r" % (value,) in str(info.value)


@pytest.mark.parametrize('value', ['1.5', '1_0', '1e3', '\uff15', 'nan', '', True, 2 ** 60])
def test_to_number_integers_are_plain_digits(value):
    with pytest.raises(ConfigError, match="'n'"):
        to_number(value, 'n', integer=True)


def test_to_number_reads_plain_numbers():
    assert to_number(' 2.5 ', 'n') == 2.5 and to_number('-.5', 'n') == -0.5
    assert to_number('1e3', 'n') == 1000.0 and to_number(7, 'n') == 7
    assert to_number('+42', 'n', integer=True) == 42
    assert to_number('0', 'n', minimum=0, maximum=0) == 0
    with pytest.raises(ConfigError, match="'n': '11' is above 10"):
        to_number('11', 'n', maximum=10)
    assert not math.isnan(to_number(float(LARGEST), 'n'))


def test_to_signum_reads_plain_digits_and_names():
    assert to_signum('9') == 9 and to_signum(' kill ') == 9 and to_signum('SIGTERM') == 15
    for bad in ('\uff19', '+9', '9.0', 'SIGKILL+', 'SIGRTMIN+99999', ''):
        with pytest.raises(ConfigError, match="'sig'"):
            to_signum(bad, 'sig')


def test_to_host_and_to_name():
    for good in ('localhost', 'statsd.example.org', 'stats_1', '127.0.0.1', '::1',
                 'h\u00f4te.example', 'example.org.'):
        assert to_host(' %s ' % good, 'host') == good
    for bad in ('', 'a b', 'a..b', '-a.b', 'a-.b', 'x/y', 'h:1', '999.1.1.1', 'x' * 64,
                '1.2.3.4.5'):
        with pytest.raises(ConfigError, match="'host'"):
            to_host(bad, 'host')
    with pytest.raises(ConfigError, match='IPv6'):
        to_host('::1', 'host', ipv6=False)
    assert to_name(' web ', 'watcher') == 'web' and to_name('', 'watcher') == ''
    with pytest.raises(ConfigError, match="'watcher'.*control"):
        to_name('web\nother', 'watcher')


# -- redaction --------------------------------------------------------------------------------

@pytest.mark.parametrize('url, shown', [
    ('http://bob:s3cret@h:80/x?a=1', 'http://bob:***@h:80/x?a=1'),
    ('redis://:s3cret@127.0.0.1:6379/0', 'redis://:***@127.0.0.1:6379/0'),
    ('https://ghp_tok3n@github.com/', 'https://***@github.com/'),
    ('http://h/x?token=abc&page=2&api_key=k&X-Amz-Signature=s#access_token=t',
     'http://h/x?token=***&page=2&api_key=***&X-Amz-Signature=***#access_token=***'),
    ('http://u:p@ss/w@h/x', 'http://u:***@h/x'),  # raw "@" and "/" in a password
    ('http://u:s3cret@[::1', 'http://u:***@[::1'),  # does not parse
    ('unix://:pw@/tmp/r.sock?db=0&password=s3cret', 'unix://:***@/tmp/r.sock?db=0&password=***'),
    ('http://h:8080/health', 'http://h:8080/health'),
    ('http://h/?email=a@b.example', 'http://h/?email=a@b.example'),
    ('not a url at all', 'not a url at all'),
    ('', ''),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_url_secrets_as_written_and_decoded():
    assert url_secrets('http://u:p%40ss%2Fword@h/?sig=a%20b') == (
        'p%40ss%2Fword', 'p@ss/word', 'a%20b', 'a b')
    assert url_secrets('http://h/?page=1') == ()


def test_redact_text_finds_urls_and_given_secrets():
    text = "cannot GET 'http://u:s3cretpw@h/' (redis://:other-pw@h/0), said s3cretpw"
    assert redact_text(text, ['s3cretpw']) == (
        "cannot GET 'http://u:***@h/' (redis://:***@h/0), said ***")
    assert redact_text('short pw: abc', ['abc']) == 'short pw: abc'  # too short to look for


def test_redact_error_masks_quoted_pieces_of_the_user_information():
    url = 'http://u:pa/ssword@h/'  # urllib reads 'u' as the host and 'pa' as the port
    error = ValueError("Port could not be cast to integer value as 'pa'")
    assert redact_error(error, url) == "Port could not be cast to integer value as '***'"


def test_declared_secrets_are_masked_in_every_log_line(caplog):
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger('circus_plugins')
    add_secret('declared-smtp-password')
    log.info('login with %s failed', 'declared-smtp-password')
    log.warning('fetching %s', 'https://hooks.example/x?token=webhook-t0ken')
    try:
        raise OSError('cannot reach http://u:in-traceback@h/')
    except OSError:
        log.exception('failed')
    assert 'login with *** failed' in caplog.text
    assert 'fetching https://hooks.example/x?token=***' in caplog.text
    assert 'http://u:***@h/' in caplog.text
    for secret in ('declared-smtp-password', 'webhook-t0ken', 'in-traceback'):
        assert secret not in caplog.text


def test_config_errors_do_not_show_credentials():
    for text in ('{"check_url": "http://u:s3cret@h/",', ':http://u:s3cret@h/'):
        with pytest.raises(ConfigError) as info:
            decode_config(text)
        assert 's3cret' not in str(info.value) and 'u:***@h' in str(info.value)


def matches(value, names):
    match = to_matcher(value, 'watchers')
    return [name for name in names if match(name)]


def test_to_matcher_star_matches_every_name():
    assert matches('*', ['web', '', 'a b', 'x.y', 'two\nlines']) == [
        'web', '', 'a b', 'x.y', 'two\nlines']
    assert matches(' api, * ', ['web', 'api']) == ['web', 'api']


def test_to_matcher_globs_separated_by_commas_or_spaces_match_whole_names():
    names = ['web-1', 'web-', 'web', 'xweb-1', 'api', 'api2', 'db', 'cache', 'queue']
    assert matches('web-*, api', names) == ['web-1', 'web-', 'api']
    assert matches('db,cache\tqueue', names) == ['db', 'cache', 'queue']


def test_to_matcher_character_classes_and_question_marks():
    names = ['web-1', 'web-7', 'web-a', 'web-10']
    assert matches('web-[0-5]', names) == ['web-1']
    assert matches('web-[!0-9]', names) == ['web-a']
    assert matches('web-?', names) == ['web-1', 'web-7', 'web-a']


def test_to_matcher_is_case_sensitive():
    assert matches('Web-*', ['web-1', 'Web-1', 'WEB-1']) == ['Web-1']
    assert matches('re:web', ['web', 'WEB']) == ['web']


def test_to_matcher_re_prefix_is_a_regular_expression_matching_the_whole_name():
    names = ['web-12', 'api-3', 'web-12x', 'xweb-1', 'web-', 'web-*']
    assert matches(r're:(web|api)-\d+', names) == ['web-12', 'api-3']


def test_to_matcher_refuses_a_bad_regular_expression_naming_the_option():
    with pytest.raises(ConfigError, match="option 'watchers': '\\(' is not a regular expression"):
        to_matcher('re:(', 'watchers')


@pytest.mark.parametrize('value', ['', '   ', ', ,'])
def test_to_matcher_refuses_a_value_naming_nothing(value):
    with pytest.raises(ConfigError, match="option 'watchers': .* names nothing"):
        to_matcher(value, 'watchers')


def test_to_matcher_regex_ignores_space_after_its_prefix():
    assert to_matcher('re: web-\\d+', 'watchers')('web-1')


def test_to_actions_reads_names_or_star_and_refuses_the_rest():
    from circus_plugins.config import to_actions
    assert to_actions(' crash, flapping_giveup  reap ', 'events') == (
        'crash', 'flapping_giveup', 'reap')
    assert to_actions('*', 'events') == ('*',)
    for bad in ('', ' , ', 'reap; rm', 'x' * 65):
        with pytest.raises(ConfigError, match="option 'events'"):
            to_actions(bad, 'events')
