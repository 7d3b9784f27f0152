"""A process for the resource watcher's tests.

``resource_hog.py cpu``: burns one core. ``resource_hog.py hold MB``: holds MB megabytes
and sleeps. ``resource_hog.py parent MB FILE``: runs ``hold MB`` as its child, writes the
child's exit status to FILE when it ends, then sleeps.
"""
import subprocess
import sys
import time


def main(mode, *args):
    if mode == 'cpu':
        while True:
            pass
    elif mode == 'hold':
        kept = b'x' * (int(args[0]) << 20)  # written, so resident
        while kept:
            time.sleep(1000)
    elif mode == 'parent':
        child = subprocess.Popen([sys.executable, __file__, 'hold', args[0]])
        status = child.wait()
        with open(args[1], 'w') as out:
            out.write(str(status))
        time.sleep(1000)


if __name__ == '__main__':
    main(*sys.argv[1:])
