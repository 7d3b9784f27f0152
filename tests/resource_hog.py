"""A process for the resource watcher's tests.

``resource_hog.py cpu``: burns one core. ``resource_hog.py hold MB``: holds MB megabytes
and sleeps. ``resource_hog.py parent MB FILE``: runs ``hold MB`` as its child, writes the
child's exit status to FILE when it ends, then sleeps.
"""
import signal
import subprocess
import sys


def main(mode, *args):
    # Whatever happens to the test and its circusd, this process ends by itself.
    signal.alarm(120)
    if mode == 'cpu':
        while True:
            pass
    elif mode == 'hold':
        kept = b'x' * (int(args[0]) << 20)  # written, so resident
        while kept:
            signal.pause()
    elif mode == 'parent':
        child = subprocess.Popen([sys.executable, __file__, 'hold', args[0]])
        status = child.wait()
        with open(args[1], 'w') as out:
            out.write(str(status))
        signal.pause()


if __name__ == '__main__':
    main(*sys.argv[1:])
