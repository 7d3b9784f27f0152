"""The demo that README.rst's first command runs."""
import os
import subprocess
import sys

from circus_plugins.testing import wait_for
from conftest import PLUGIN_ENV, ROOT


def test_demo_prints_events_and_stops():
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'examples', 'demo.py'),
                             '--seconds', '6'], capture_output=True, text=True, timeout=9.5)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == 'stopped'
    assert any(line.split()[:2] == ['flaky', 'spawn'] for line in lines), result.stdout
    assert any(line.split()[:2] == ['web', 'pids'] for line in lines), result.stdout
    # The host's Flapping stopped the crasher, and the printer heard it say so.
    assert any(line.split()[:4] == ['crasher', 'flapping', 'by', 'flapping']
               for line in lines), result.stdout


def test_the_trimmer_of_the_layout_page_trims_and_gauges(start_circusd, udp):
    """docs/layout.rst builds this plugin from the parts; circusd runs it from circus.ini."""
    env = {'PYTHONPATH': os.pathsep.join([os.path.join(ROOT, 'examples'),
                                          PLUGIN_ENV['PYTHONPATH']])}
    circusd = start_circusd(
        watchers={'web': {'cmd': 'sleep 1000', 'numprocesses': 4}},
        plugins={'trimmer': {'use': 'trimmer.Trimmer', 'watcher': 'web', 'most': 2,
                             'loop_rate': 0.2, 'host': '127.0.0.1', 'port': udp.port}},
        env=env)
    # A gauge of 2 comes from a look after the trim, which must have left it alone.
    udp.wait_lines(lambda lines: 'circus.app.watcher.web.processes:2|g' in lines,
                   timeout=8)
    assert 'circus.app.watcher.web.processes:4|g' in udp.lines()
    get = circusd.call('get', name='web', keys=['numprocesses'])
    assert get['options']['numprocesses'] == 2
    wait_for(lambda: len(circusd.pids('web')) == 2, what='the extra processes to go')
