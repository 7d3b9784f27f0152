"""The package as users get it: an sdist and a wheel built from this tree, checked, and the
wheel installed into a fresh virtualenv beside circus 0.19, running a plugin under circusd.

Nothing here reaches an index: the fresh virtualenv takes its dependencies from the wheels
``./dev test`` collects in ``.cache/wheelhouse/pyX.Y`` (or ``$CIRCUS_PLUGINS_WHEELHOUSE``).
"""
import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import circus_plugins
from circus_plugins.testing import Circusd, wait_for
from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'circus_plugins')
WHEELHOUSE = os.environ.get('CIRCUS_PLUGINS_WHEELHOUSE') or os.path.join(
    ROOT, '.cache', 'wheelhouse', 'py%d.%d' % sys.version_info[:2])
# What a copy of the tree leaves out: what building, testing and installing leave behind.
_NOT_SOURCE = shutil.ignore_patterns('.git', '.venv', '.cache', '.tox', 'build', 'dist',
                                     '_build', '*.egg-info', '__pycache__', '.hypothesis',
                                     '.pytest_cache', '.mypy_cache', 'node_modules')


def _run(args, timeout=60, **kwargs):
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, **kwargs)
    assert done.returncode == 0, '%s failed:\n%s' % (args, done.stdout.decode(errors='replace'))
    return done.stdout.decode()


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    """The sdist and the wheel, built as ``python -m build`` does (the wheel from the
    sdist, so that a file the sdist leaves out is missing from the wheel too) from a copy
    of the tree, which building would otherwise write into."""
    source = tmp_path_factory.mktemp('source') / 'circus-plugins'
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    out = tmp_path_factory.mktemp('dist')
    _run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(out), str(source)],
         timeout=60)
    sdist, = out.glob('*.tar.gz')
    wheel, = out.glob('*.whl')
    return sdist, wheel


def _package_files():
    found = set()
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in files:
            if not name.endswith(('.pyc', '.pyo')):
                path = os.path.join(folder, name)
                found.add(os.path.relpath(path, ROOT).replace(os.sep, '/'))
    return found


def test_the_wheel_holds_the_package_its_data_and_nothing_else(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {name for name in names if name.startswith('circus_plugins/')}
    assert package == _package_files()
    assert 'circus_plugins/py.typed' in package
    assert 'circus_plugins/alerts/_grouping.py' in package   # subpackages come along
    others = {name.split('/')[0] for name in names - package}
    assert others == {'circus_plugins-%s.dist-info' % circus_plugins.__version__}


def test_the_wheel_says_what_the_package_needs(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        info = 'circus_plugins-%s.dist-info/' % circus_plugins.__version__
        metadata = email.parser.Parser().parsestr(archive.read(info + 'METADATA').decode())
        entry_points = archive.read(info + 'entry_points.txt').decode()
    assert metadata['Name'] == 'circus-plugins'
    assert metadata['Version'] == circus_plugins.__version__
    assert metadata['Requires-Python'].startswith('>=3.')
    requires = metadata.get_all('Requires-Dist')
    # Every runtime dependency with the lower bound that was tested.
    for name in ('pyzmq', 'tornado', 'iowait'):
        assert [r for r in requires if r.startswith(name + '>=') and 'extra ==' not in r], name
    assert set(metadata.get_all('Provides-Extra')) >= {'redis', 'alerts', 'prometheus',
                                                       'autoscale'}
    assert 'circus-plugin = circus_plugins.cli:main' in entry_points
    assert 'Typing :: Typed' in metadata.get_all('Classifier')


def test_the_sdist_holds_what_the_tests_need(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        names = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
    for needed in ('pyproject.toml', 'setup.py', 'LICENSE', 'README.rst', 'tox.ini', 'dev',
                   'MANIFEST.in', 'tests/conftest.py', 'tests/test_package.py',
                   'examples/demo.py', 'docs/conf.py', 'circus_plugins/py.typed'):
        assert needed in names, needed
    assert not [name for name in names if name.startswith(('.venv/', '.cache/', 'docs/_build/'))
                or '__pycache__' in name]


def test_twine_finds_nothing_to_say(dist):
    output = _run([sys.executable, '-m', 'twine', 'check', '--strict'] + [str(p) for p in dist])
    assert output.count('PASSED') == 2


@pytest.fixture(scope='module')
def fresh_venv(dist, tmp_path_factory):
    """A new virtualenv holding circus 0.19 and then the wheel, as a user who adds the
    package to a circus install has them; nothing from this checkout is on its path."""
    if not os.path.isdir(WHEELHOUSE):
        pytest.skip('no wheels of the dependencies in %s: ./dev test collects them' % WHEELHOUSE)
    venv = tmp_path_factory.mktemp('venv') / 'env'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)])
    python = str(venv / 'bin' / 'python')
    install = [sys.executable, '-m', 'pip', '--python', python, 'install', '-q',
               '--disable-pip-version-check', '--no-index', '--find-links', WHEELHOUSE]
    _run(install + ['circus==0.19.0'], timeout=120)
    _run(install + [str(dist[1])], timeout=120)
    return venv


def _clean_env():
    """This environment, less what would put the checkout on the fresh venv's path."""
    return {key: value for key, value in os.environ.items()
            if key not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}


def test_the_installed_package_is_the_wheels(fresh_venv, tmp_path):
    python = str(fresh_venv / 'bin' / 'python')
    where = _run([python, '-c', 'import circus_plugins.alerts, circus_plugins.prometheus; '
                  'print(circus_plugins.__file__)'], cwd=str(tmp_path), env=_clean_env())
    assert where.strip().startswith(str(fresh_venv))
    # circus 0.19 installs a circus-plugin of its own; installed after it, ours has the name.
    for command in ([str(fresh_venv / 'bin' / 'circus-plugin'), '--version'],
                    [python, '-m', 'circus_plugins', '--version']):
        assert _run(command, cwd=str(tmp_path), env=_clean_env()).strip() \
            == circus_plugins.__version__


def test_circusd_runs_a_plugin_from_the_wheel(fresh_venv, tmp_path):
    """circusd of the fresh venv runs a ``[plugin:NAME]`` section with its own plugin
    runner, and the plugin (a family in a package of its own) does its job."""
    log = tmp_path / 'events.jsonl'
    # An empty PYTHONPATH is none: circusd's environment is this one and this.
    circusd = Circusd(tmp_path, python=str(fresh_venv / 'bin' / 'python'), env={'PYTHONPATH': ''},
                      watchers={'sleeper': {'cmd': 'sleep 1000', 'numprocesses': 1}},
                      plugins={'log': {'use': 'circus_plugins.event_logger.EventLogger',
                                       'path': str(log)}})

    def spawn_logged():
        if log.exists() and any(_spawn_of(line, 'sleeper')
                                for line in log.read_text().splitlines()):
            return True
        # The plugin starts after the watchers and may not hear the first added process
        # (a new subscription): add another until one is logged.
        assert circusd.call('incr', name='sleeper')['status'] == 'ok'
        return False

    try:
        circusd.start()
        wait_for(spawn_logged, 8.0, interval=0.5, what='a spawn in the event log')
    finally:
        circusd.stop()
        circusd_log = circusd.log()
    assert 'Traceback' not in circusd_log, circusd_log


def _spawn_of(line, watcher):
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return event.get('watcher') == watcher and event.get('event') == 'spawn'


def test_the_changelog_starts_with_this_version():
    with open(os.path.join(ROOT, 'docs', 'changelog.rst'), encoding='utf-8') as changelog:
        lines = changelog.read().splitlines()
    headings = [lines[i - 1] for i, line in enumerate(lines)
                if i and line and set(line) == {'-'} and len(line) == len(lines[i - 1])]
    assert headings and headings[0].split()[0] == circus_plugins.__version__, headings[:1]
