"""A process that sends watchdog heartbeats, for the watchdog plugin's tests.

``python heartbeat.py PORT DIR [mute]`` sends ``<pid>;<time>`` to 127.0.0.1:PORT every
0.1 s, except while a file named after its pid exists in DIR, or always with ``mute``:
then it is silent but alive. It survives SIGUSR1, writing ``DIR/<pid>.signal``, so that
tests can see which signal it got; SIGTERM ends it as usual.
"""
import os
import signal
import socket
import sys
import time


def main() -> None:
    port, directory = int(sys.argv[1]), sys.argv[2]
    mute = 'mute' in sys.argv[3:]
    pid = os.getpid()
    silence = os.path.join(directory, str(pid))

    def record(signum, frame):
        with open(os.path.join(directory, '%d.signal' % pid), 'a') as out:
            out.write('%d\n' % signum)
    signal.signal(signal.SIGUSR1, record)
    signal.alarm(120)  # whatever happens to the test, this process ends by itself
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        if not mute and not os.path.exists(silence):
            try:
                sock.sendto(b'%d;%f' % (pid, time.time()), ('127.0.0.1', port))
            except OSError:
                pass  # nobody listens yet
        time.sleep(0.1)  # the heartbeat's period: what the watchdog watches


if __name__ == '__main__':
    main()
