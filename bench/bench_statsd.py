"""Benchmark circus_plugins.statsd.StatsdClient against circus 0.19's StatsdClient.

Run from the checkout's root::

    .venv/bin/python bench/bench_statsd.py            # 7 rounds of 200000 metrics (~30 s)
    .venv/bin/python bench/bench_statsd.py --quick    # smoke test (a few seconds)
    .venv/bin/python bench/bench_statsd.py --metrics 500000 --rounds 9 --pin -v

Three senders, in this process, each sending ``--metrics`` counter increments
(``circus.app.watcher.web.spawn:1|c``, the line StatsdEmitter sends for a spawn) per round:

circus 0.19
    ``circus.plugins.statsd.StatsdClient.increment()``: one datagram a metric, the only
    way it can send.
ours, plain
    ``circus_plugins.statsd.StatsdClient.increment()``: one datagram a metric too.
ours, batched
    ``increment()`` on a pipeline whose ``send()`` is called every ``--batch`` metrics (50
    by default), as StatsdEmitter does with a burst of events: lines packed into datagrams
    of at most 512 bytes.

The metrics go to a UDP socket on 127.0.0.1 that a receiver process drains and counts
(with a large receive buffer), so that the time measured is the sender's: building the
lines and handing datagrams to the kernel. Each round is timed in wall-clock time
(metrics/s, the figure the 3x target applies to) and in the sending thread's CPU time
(metrics/CPU-s, steadier on a busy machine). Rounds interleave the senders; the median
round is reported, with the share of lines the receiver got (loopback UDP drops what the
receiver cannot take, without slowing the sender). Before timing, one metric from each
sender is compared on the wire: all three must send the same line.
"""
import argparse
import collections
import os
import select
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # our package, also when it is not installed

from _child import Child  # noqa: E402

PREFIX = 'circus.app.watcher'
BUCKET = 'web.spawn'
LINE = b'circus.app.watcher.web.spawn:1|c'
TARGET_BATCHED = 3.0  # ours batched / circus 0.19, metrics per second

Round = collections.namedtuple('Round', 'wall cpu sent lines')


# -- receiver process -------------------------------------------------------------------------

def receiver_main(conn, cpus=None) -> None:
    """Drains a UDP socket, counting datagrams and lines; obeys 'report' and 'exit'.

    On 'report' it drains until the socket has been quiet for 0.2 s, then sends back
    ``(datagrams, lines, last_datagram)`` since the start.
    """
    if cpus:
        os.sched_setaffinity(0, cpus)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(('127.0.0.1', 0))
    conn.send(sock.getsockname()[1])
    datagrams = lines = 0
    last = b''

    def drain(timeout):
        nonlocal datagrams, lines, last
        got = False
        while True:
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                return got
            data = sock.recv(65536)
            datagrams += 1
            lines += data.count(b'\n') + 1
            last = data
            got = True
            timeout = 0

    try:
        while True:
            ready, _, _ = select.select([sock, conn], [], [])
            if sock in ready:
                drain(0)
            if conn in ready:
                try:
                    order = conn.recv()
                except EOFError:
                    return
                if order == 'exit':
                    return
                while drain(0.2):
                    pass
                conn.send((datagrams, lines, last))
    finally:
        sock.close()


class Receiver(Child):
    def __init__(self, cpus=None) -> None:
        super().__init__(receiver_main, 'bench-receiver', cpus)
        self.port = self.ready
        self.seen = (0, 0)

    def received(self):
        """``(datagrams, lines, last datagram)`` received since the previous call."""
        self.conn.send('report')
        datagrams, lines, last = self.conn.recv()
        new = (datagrams - self.seen[0], lines - self.seen[1], last)
        self.seen = (datagrams, lines)
        return new


# -- senders ------------------------------------------------------------------------------

def circus_plain(port):
    from circus.plugins.statsd import StatsdClient
    client = StatsdClient(host='127.0.0.1', port=port, prefix=PREFIX)

    def run(count):
        increment = client.increment
        for _ in range(count):
            increment(BUCKET)
        return count  # datagrams sent
    return run, client.stop


def ours_plain(port):
    from circus_plugins.statsd import StatsdClient
    client = StatsdClient(host='127.0.0.1', port=port, prefix=PREFIX)

    def run(count):
        increment = client.increment
        sent = client.sent
        for _ in range(count):
            increment(BUCKET)
        return client.sent - sent
    return run, client.stop


def ours_batched(port, batch):
    from circus_plugins.statsd import StatsdClient
    client = StatsdClient(host='127.0.0.1', port=port, prefix=PREFIX)
    pipe = client.pipeline()

    def run(count):
        increment, send = pipe.increment, pipe.send
        sent = client.sent
        full, rest = divmod(count, batch)
        for _ in range(full):
            for _ in range(batch):
                increment(BUCKET)
            send()
        for _ in range(rest):
            increment(BUCKET)
        send()
        return client.sent - sent
    return run, client.stop


# -- the run --------------------------------------------------------------------------------

def check_wire(receiver, senders) -> None:
    """Each sender's single metric must reach the receiver as the same line."""
    for label, (run, _) in senders.items():
        run(1)
        datagrams, lines, last = receiver.received()
        if (datagrams, lines, last) != (1, 1, LINE):
            raise SystemExit('%s sent %r (%d datagrams, %d lines), not %r'
                             % (label, last, datagrams, lines, LINE))


def bench(args) -> int:
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit('--pin needs at least 2 CPUs')
        half = len(cpus) // 2
        os.sched_setaffinity(0, cpus[:half])
        receiver = Receiver(cpus[half:])
    else:
        receiver = Receiver()
    senders = {
        'circus 0.19': circus_plain(receiver.port),
        'ours, plain': ours_plain(receiver.port),
        'ours, batched %d' % args.batch: ours_batched(receiver.port, args.batch),
    }
    try:
        check_wire(receiver, senders)
        results = {label: [] for label in senders}
        for number in range(args.rounds):
            for label, (run, _) in senders.items():
                cpu, start = time.thread_time(), time.perf_counter()
                sent = run(args.metrics)
                elapsed = time.perf_counter() - start
                cpu = time.thread_time() - cpu
                _, lines, _ = receiver.received()
                results[label].append(Round(args.metrics / elapsed, args.metrics / cpu,
                                            sent, lines))
                if args.verbose:
                    print('round %d  %-16s %9.0f metrics/s %9.0f metrics/CPU-s '
                          '%7d datagrams  %5.1f%% received'
                          % (number + 1, label, args.metrics / elapsed, args.metrics / cpu,
                             sent, 100.0 * lines / args.metrics))
    finally:
        for _, stop in senders.values():
            stop()
        receiver.close()
    return report(args, results)


def report(args, results) -> int:
    print('statsd clients, %d counter increments a round, %d rounds, median round '
          '(Python %s, %d CPUs)' % (args.metrics, args.rounds, sys.version.split()[0],
                                    os.cpu_count()))
    print()
    print('%-16s %11s %10s %14s %10s %10s %7s' % (
        'sender', 'metrics/s', 'us/metric', 'metrics/CPU-s', 'CPU-us/m', 'metrics/dg',
        'recv'))
    wall, cpu = {}, {}
    for label, rounds in results.items():
        wall[label] = statistics.median(r.wall for r in rounds)
        cpu[label] = statistics.median(r.cpu for r in rounds)
        sent = statistics.median(r.sent for r in rounds)
        received = min(r.lines for r in rounds) / args.metrics
        print('%-16s %11.0f %10.2f %14.0f %10.2f %10.1f %6.1f%%' % (
            label, wall[label], 1e6 / wall[label], cpu[label], 1e6 / cpu[label],
            args.metrics / sent, 100 * received))
    circus, plain, batched = wall.values()
    cpu_circus, cpu_plain, cpu_batched = cpu.values()
    print()
    print('ours/circus          wall    CPU')
    print('  plain           %5.2fx  %5.2fx' % (plain / circus, cpu_plain / cpu_circus))
    ok = batched / circus >= TARGET_BATCHED
    print('  batched         %5.2fx  %5.2fx   target >= %.1fx (wall): %s' % (
        batched / circus, cpu_batched / cpu_circus, TARGET_BATCHED,
        'OK' if ok else 'MISSED'))
    spread = ', '.join('%s %.0f%%' % (label, 100 * statistics.pstdev(
        [r.wall for r in rounds]) / statistics.mean([r.wall for r in rounds]))
        for label, rounds in results.items())
    print('round-to-round spread (wall): %s' % spread)
    print('recv is the worst round\'s share of lines the receiver got (loopback UDP drops '
          'what it cannot take)')
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='smoke test: 20000 metrics, 2 rounds')
    parser.add_argument('--metrics', type=int,
                        help='metrics per sender and round (default 200000)')
    parser.add_argument("--rounds", type=int, help="rounds (default 7)")
    parser.add_argument('--batch', type=int, default=50,
                        help='metrics per pipeline send for the batched sender (default 50)')
    parser.add_argument('--pin', action='store_true',
                        help='run the receiver and the senders on separate halves of the CPUs')
    parser.add_argument('-v', '--verbose', action='store_true', help='print every round')
    args = parser.parse_args(argv)
    if args.metrics is None:
        args.metrics = 20000 if args.quick else 200000
    if args.rounds is None:
        args.rounds = 2 if args.quick else 7
    if args.metrics < 1 or args.rounds < 1 or args.batch < 1:
        parser.error('--metrics, --rounds and --batch must be positive')
    try:
        return bench(args)
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
