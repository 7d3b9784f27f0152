"""Real servers for tests, on 127.0.0.1: a webhook receiver (tornado), an SMTP server
(aiosmtpd, with STARTTLS and AUTH when asked) and a Prometheus server (Debian's). Their
fixtures are in conftest.py."""
import contextlib
import email
import email.policy
import json
import os
import shutil
import ssl
import subprocess
import urllib.parse
import urllib.request

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from circus_plugins.testing import free_port, wait_for

TOKEN = 'B0123456789ABCDEFGHIJ'


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1: records ``(loop time, json body)``; answers each
    request with the next of :attr:`answers` (``(status, headers)``), then 200."""

    def __init__(self, loop):
        self.loop = loop
        self.port = free_port()
        self.got = []
        self.attempts = []  # loop time of every request, answered or not
        self.answers = []
        self.server = None
        receiver = self

        class Hook(RequestHandler):
            def post(self, *args):
                receiver.attempts.append(receiver.loop.loop.time())
                if receiver.answers:
                    status, headers = receiver.answers.pop(0)
                    self.set_status(status)
                    for name, value in headers.items():
                        self.set_header(name, value)
                    return self.finish('slow down')
                receiver.got.append((receiver.loop.loop.time(),
                                     json.loads(self.request.body)))
                self.finish('ok')
        # the receiver's access log is the receiver's, not ours: quiet
        self.app = Application([(r'/services/(.*)', Hook)], log_function=lambda h: None)

    def start(self):
        def listen():
            self.server = HTTPServer(self.app)
            self.server.listen(self.port, '127.0.0.1')
        self.loop.call(listen)

    def stop(self):
        if self.server is not None:
            self.loop.call(self.server.stop)

    @property
    def url(self):
        return 'http://127.0.0.1:%d/services/T0/%s?sig=%s' % (self.port, TOKEN, TOKEN)

    def bodies(self):
        return [body for _, body in self.got]


USER = 'alerts'
PASSWORD = 'Corr3ct-h0rse-battery'
WRONG = 'Wr0ng-passw0rd-given'


class Inbox:
    """An aiosmtpd handler keeping what it receives, and an authenticator."""

    def __init__(self):
        self.mails = []  # (envelope, whether the session was TLS, authenticated)
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        tls = (session.ssl is not None  # after STARTTLS; implicit TLS, below
               or server.transport.get_extra_info('ssl_object') is not None)
        self.mails.append((envelope, tls, session.authenticated))
        return '250 OK'

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('nobody@'):
            return '550 5.1.1 no such user'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
              and auth_data.password == PASSWORD.encode())
        self.logins.append(ok)
        return AuthResult(success=ok, handled=False)

    def parsed(self, index=0):
        return email.message_from_bytes(self.mails[index][0].original_content,
                                         policy=email.policy.default)


def server_context(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert('127.0.0.1', 'localhost').configure_cert(context)
    return context


@contextlib.contextmanager
def smtp_server(**options):
    """An aiosmtpd server on 127.0.0.1 with ``options`` (Controller's and SMTP's; ``port``
    to choose it, ``auth`` for AUTH with :data:`USER` and :data:`PASSWORD`)."""
    inbox = Inbox()
    if options.pop('auth', False):
        options.update(authenticator=inbox.authenticate, auth_require_tls=True)
    port = options.pop('port', None) or free_port()
    controller = Controller(inbox, hostname='127.0.0.1', port=port, **options)
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


PROMETHEUS = shutil.which('prometheus') or '/usr/bin/prometheus'
PROMTOOL = shutil.which('promtool') or '/usr/bin/promtool'


class PrometheusServer:
    """Debian's Prometheus on a free port of 127.0.0.1, scraping ``ports`` free ports of
    127.0.0.1 (:attr:`ports`) every second; :meth:`query` asks its HTTP API."""

    def __init__(self, workdir, ports=1, **scrape):
        self.workdir = str(workdir)
        self.port = free_port()
        self.ports = [free_port() for _ in range(ports)]
        job = dict({'job_name': 'circus', 'scrape_interval': '1s', 'scrape_timeout': '1s',
                    'static_configs': [{'targets': ['127.0.0.1:%d' % port
                                                    for port in self.ports]}]}, **scrape)
        self.config = os.path.join(self.workdir, 'prometheus.yml')
        with open(self.config, 'w') as out:  # JSON is YAML
            json.dump({'global': {'scrape_interval': '1s'}, 'scrape_configs': [job]}, out)
        self.process = None

    def take_port(self):
        """A scraped port no one has taken yet."""
        return self.ports.pop()

    def start(self):
        self.log = open(os.path.join(self.workdir, 'prometheus.log'), 'wb')
        self.process = subprocess.Popen(
            [PROMETHEUS, '--config.file=' + self.config,
             '--storage.tsdb.path=' + os.path.join(self.workdir, 'tsdb'),
             '--web.listen-address=127.0.0.1:%d' % self.port],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.ready, timeout=8, interval=0.05, what='prometheus to be ready')
        return self

    def ready(self):
        assert self.process.poll() is None, 'prometheus exited: see prometheus.log'
        try:
            with urllib.request.urlopen('http://127.0.0.1:%d/-/ready' % self.port,
                                        timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def query(self, promql):
        """The instant vector of ``promql``: ``{frozenset(labels): value}``."""
        url = 'http://127.0.0.1:%d/api/v1/query?%s' % (
            self.port, urllib.parse.urlencode({'query': promql}))
        with urllib.request.urlopen(url, timeout=2) as reply:
            data = json.load(reply)['data']['result']
        return {frozenset((k, v) for k, v in r['metric'].items() if k != '__name__'):
                float(r['value'][1]) for r in data}

    def value(self, promql):
        """The single value of ``promql``, or ``None`` while it has none."""
        found = self.query(promql)
        return next(iter(found.values())) if len(found) == 1 else None

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
