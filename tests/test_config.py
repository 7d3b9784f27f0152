"""The --config codec, get_plugin_cmd and circus.ini sections."""
import json
import shlex

import pytest

from circus_plugins import ConfigError, PluginLoadError, decode_config, encode_config, \
    get_plugin_cmd
from circus_plugins.config import read_ini_plugin, to_bool, to_number
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
