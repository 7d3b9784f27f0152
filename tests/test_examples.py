"""The demo that README.rst's first command runs."""
import os
import subprocess
import sys

from conftest import ROOT


def test_demo_prints_events_and_stops():
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'examples', 'demo.py'),
                             '--seconds', '4'], capture_output=True, text=True, timeout=9)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == 'stopped'
    assert any(line.split()[:2] == ['flaky', 'spawn'] for line in lines), result.stdout
    assert any(line.split()[:2] == ['web', 'pids'] for line in lines), result.stdout
