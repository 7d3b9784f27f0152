"""The demo that README.rst's first command runs."""
import os
import signal
import subprocess
import sys
import threading

from circus_plugins.testing import wait_for
from conftest import PLUGIN_ENV, ROOT


def test_demo_prints_events_and_stops(tmp_path):
    """The demo prints circusd's events, the pids of web and what Flapping did, until
    Ctrl-C (SIGINT) stops it all."""
    with open(tmp_path / 'stderr', 'w') as stderr:
        demo = subprocess.Popen([sys.executable, os.path.join(ROOT, 'examples', 'demo.py')],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        def printed(*words):
            return any(line.split()[:len(words)] == list(words) for line in list(lines))
        wait_for(lambda: printed('flaky', 'spawn') and printed('web', 'pids')
                 # The host's Flapping stopped the crasher, and the printer heard it.
                 and printed('crasher', 'flapping', 'by', 'flapping'), timeout=8,
                 what='the demo to print events, pids and flapping')
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=8) == 0, (tmp_path / 'stderr').read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(5)
    assert lines[-1] == 'stopped\n', lines


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
