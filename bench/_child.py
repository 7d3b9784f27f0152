"""A helper process for the benchmarks, talked to over a pipe (one module for both)."""
import contextlib
import multiprocessing
import sys


class Child:
    """Runs ``target(conn, cpus)`` in a spawned process (no fork with zmq contexts about)
    and waits for its first message, :attr:`ready` (a port, say). ``close()`` sends it
    ``'exit'`` and makes sure it is gone."""

    def __init__(self, target, name, cpus=None, timeout=30):
        mp = multiprocessing.get_context('spawn')
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=target, args=(child, cpus), name=name, daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(timeout):
            raise RuntimeError('%s did not start' % name)
        self.ready = self.conn.recv()

    def close(self):
        with contextlib.suppress(OSError, ValueError):
            self.conn.send('exit')
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run(main):
    """Run a benchmark's ``main()``; Ctrl-C ends it with status 130 after one line (the
    ``with`` blocks of ``main`` have stopped what it started on the way out)."""
    try:
        main()
    except KeyboardInterrupt:
        print('\ninterrupted; everything started was stopped', file=sys.stderr)
        sys.exit(130)
