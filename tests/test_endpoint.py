"""Checking endpoints and SSH servers before anything connects (circus_plugins._endpoint)."""
import pytest
import zmq
from hypothesis import given, strategies as st

from circus_plugins import ConfigError
from circus_plugins._endpoint import check_endpoint, check_ssh_server


@pytest.mark.parametrize('good', [
    'tcp://127.0.0.1:5555', 'tcp://localhost:1', 'tcp://[::1]:65535', 'ipc:///tmp/circus.sock',
    'inproc://events'])
def test_good_endpoints_pass(good):
    assert check_endpoint(good, 'endpoint') == good


@pytest.mark.parametrize('bad', [
    '127.0.0.1:5555', 'tcp://127.0.0.1:notaport', 'tcp://127.0.0.1:0', 'tcp://127.0.0.1:65536',
    'tcp://127.0.0.1', 'tcp://:5555', 'tcp://*:5555', 'udp://127.0.0.1:5555', 'ipc://', '',
    'tcp://127.0.0.1:5555 ', None, 5555, b'tcp://127.0.0.1:5555'])
def test_bad_endpoints_are_named(bad):
    with pytest.raises(ConfigError) as caught:
        check_endpoint(bad, '--pubsub')
    assert str(caught.value).startswith('--pubsub: %r is not an endpoint' % (bad,))


@given(st.one_of(st.text(max_size=40), st.binary(max_size=10), st.integers(), st.none()))
def test_anything_is_accepted_or_refused_in_one_line(value):
    for candidate in (value, 'tcp://%s' % (value,), 'tcp://127.0.0.1:%s' % (value,)):
        try:
            assert check_endpoint(candidate, 'endpoint') == candidate
        except ConfigError as exc:
            assert '\n' not in str(exc) and str(exc).startswith('endpoint: ')


@given(st.integers(min_value=-10, max_value=100000))
def test_ports_zmq_would_refuse_are_refused(port):
    """Loopback only: a host name would be looked up."""
    endpoint = 'tcp://127.0.0.1:%d' % port
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    try:
        try:
            socket.connect(endpoint)
            zmq_ok = 0 < port < 65536  # libzmq itself takes port 0 for a connect
        except zmq.ZMQError:
            zmq_ok = False
        try:
            check_endpoint(endpoint, 'endpoint')
            ours_ok = True
        except ConfigError:
            ours_ok = False
        assert ours_ok == zmq_ok
    finally:
        socket.close(linger=0)
        context.term()


@pytest.mark.parametrize('good', [None, 'host', 'me@host', 'me@host:2222', 'me@10.0.0.1:22'])
def test_good_ssh_servers_pass(good):
    assert check_ssh_server(good, '--ssh') == good


@pytest.mark.parametrize('bad', ['', 'me@', '@host', 'me@host:port', 'me@host:70000',
                                 'me@host:22:x', 'me @host', 22])
def test_bad_ssh_servers_are_named(bad):
    with pytest.raises(ConfigError, match='^--ssh: '):
        check_ssh_server(bad, '--ssh')
