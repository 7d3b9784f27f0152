"""Alerts posted to chat webhooks, with tornado's asynchronous HTTP client.

A :class:`Notice` is what an alert says, whatever carries it; :func:`render` makes the
JSON body of one of three formats:

``slack`` (also Mattermost and Rocket.Chat)
    ``{"text": ..., "blocks": [...]}``: ``text`` is the whole message (title, facts as
    ``name: value`` lines, text, output in a code block), which Mattermost and Rocket.Chat
    show and Slack uses for notifications; ``blocks`` is Slack's richer layout of the same.
    ``&``, ``<`` and ``>`` are escaped as Slack asks.
``teams``
    A Teams Workflows message: ``{"type": "message", "attachments": [{"contentType":
    "application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}``, the
    card holding the title, a FactSet, the text and the output in monospace.
``json``
    Our own schema, for anything else::

        {"schema": "circus-plugins/alert/1", "title": str, "kind": str,
         "watcher": str or null, "text": str, "facts": [{"name": str, "value": str}],
         "output": [str], "dropped": int}

    ``dropped`` is how many alerts before this one were dropped (queue full).

:class:`Webhook` posts a notice, raising :exc:`~circus_plugins.alerts._outbox.SendError` when it
was not delivered (with ``retry_after`` for a 429's ``Retry-After``): its :meth:`~Webhook.send`
is a sender for :class:`~circus_plugins.alerts._outbox.Outbox`. Webhook URLs carry tokens (in the
path for Slack, Mattermost and Rocket.Chat, in ``sig`` for Teams): a :class:`Webhook`
declares them with :func:`~circus_plugins._redact.add_secret` and shows its URL only as
:attr:`Webhook.shown_url`, ``scheme://host/***``.
"""
import email.utils
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._redact import add_secret, redact_text, url_secrets
from ._outbox import SendError

__all__ = ['Notice', 'Webhook', 'render', 'FORMATS', 'retry_after_seconds',
           'redact_webhook']

FORMATS = ('slack', 'teams', 'json')
SCHEMA = 'circus-plugins/alert/1'


@dataclass
class Notice:
    """What an alert says.

    :param title: one line (``"web crashed 3 times"``).
    :param kind: what happened, a word (``crash``, ``flapping``, ``recovered``...).
    :param watcher: the watcher, if the alert is about one.
    :param text: free text, lines separated by ``\\n`` (the events, one a line).
    :param facts: ``(name, value)`` pairs in order (``("host", "web1")``, ``("exit
        code", "3")``).
    :param output: the last lines the process printed, shown as code.
    """
    title: str
    kind: str = 'alert'
    watcher: Optional[str] = None
    text: str = ''
    facts: Sequence[Tuple[str, str]] = field(default_factory=list)
    output: Sequence[str] = field(default_factory=list)


def _dropped_line(dropped: int) -> str:
    return '%d earlier alert(s) dropped: too many to send' % dropped if dropped else ''


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + '\u2026'


def _slack_escape(text: str) -> str:
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


def _slack(notice: Notice, dropped: int) -> Dict[str, Any]:
    e = _slack_escape
    facts = [(str(n), str(v)) for n, v in notice.facts]
    output = '\n'.join(notice.output).replace('```', "'''")
    parts = ['*%s*' % e(notice.title)]
    parts += ['%s: %s' % (e(n), e(v)) for n, v in facts]
    if notice.text:
        parts.append(e(notice.text))
    if output:
        parts.append('```\n%s\n```' % e(output))
    if dropped:
        parts.append('_%s_' % _dropped_line(dropped))
    blocks: List[Dict[str, Any]] = [
        {'type': 'header', 'text': {'type': 'plain_text', 'text': _cut(notice.title, 150)}}]
    if facts:
        blocks.append({'type': 'section', 'fields': [
            {'type': 'mrkdwn', 'text': _cut('*%s*\n%s' % (e(n), e(v)), 2000)}
            for n, v in facts[:10]]})
    if notice.text:
        blocks.append({'type': 'section', 'text': {'type': 'mrkdwn',
                                                   'text': _cut(e(notice.text), 3000)}})
    if output:
        blocks.append({'type': 'section', 'text': {
            'type': 'mrkdwn', 'text': '```\n%s\n```' % _cut(e(output), 2990)}})
    if dropped:
        blocks.append({'type': 'context', 'elements': [
            {'type': 'mrkdwn', 'text': _dropped_line(dropped)}]})
    return {'text': '\n'.join(parts), 'blocks': blocks}


def _teams(notice: Notice, dropped: int) -> Dict[str, Any]:
    body: List[Dict[str, Any]] = [
        {'type': 'TextBlock', 'text': notice.title, 'weight': 'Bolder', 'size': 'Medium',
         'wrap': True}]
    if notice.facts:
        body.append({'type': 'FactSet', 'facts': [
            {'title': str(n), 'value': str(v)} for n, v in notice.facts]})
    if notice.text:
        body.append({'type': 'TextBlock', 'text': notice.text, 'wrap': True})
    if notice.output:
        body.append({'type': 'TextBlock', 'text': '\n\n'.join(notice.output),
                     'fontType': 'Monospace', 'wrap': True})
    if dropped:
        body.append({'type': 'TextBlock', 'text': _dropped_line(dropped),
                     'isSubtle': True, 'wrap': True})
    card = {'$schema': 'http://adaptivecards.io/schemas/adaptive-card.json',
            'type': 'AdaptiveCard', 'version': '1.4', 'body': body,
            'msteams': {'width': 'Full'}}
    return {'type': 'message', 'attachments': [
        {'contentType': 'application/vnd.microsoft.card.adaptive', 'contentUrl': None,
         'content': card}]}


def _json(notice: Notice, dropped: int) -> Dict[str, Any]:
    return {'schema': SCHEMA, 'title': notice.title, 'kind': notice.kind,
            'watcher': notice.watcher, 'text': notice.text,
            'facts': [{'name': str(n), 'value': str(v)} for n, v in notice.facts],
            'output': [str(line) for line in notice.output], 'dropped': dropped}


_RENDER = {'slack': _slack, 'teams': _teams, 'json': _json}


def render(notice: Notice, format: str, dropped: int = 0) -> Dict[str, Any]:
    """The JSON body (a dict) of ``notice`` in ``format`` (one of :data:`FORMATS`),
    saying that ``dropped`` alerts before it were dropped."""
    try:
        return _RENDER[format](notice, dropped)
    except KeyError:
        raise ValueError('unknown webhook format %r (one of %s)'
                         % (format, ', '.join(FORMATS))) from None


def retry_after_seconds(value: Optional[str], now: Optional[float] = None
                        ) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date),
    at least 0; ``None`` when missing or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r'\d+(\.\d+)?', value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact_webhook(url: str) -> str:
    """``url`` as logs may show it: ``scheme://host/***`` (the path and query of a
    webhook hold its token)."""
    scheme, sep, rest = str(url).partition('://')
    host = re.split(r'[/?#]', rest, maxsplit=1)[0].rpartition('@')[2]
    return '%s%s%s/***' % (scheme, sep, host) if sep else '***'


def _webhook_secrets(url: str) -> List[str]:
    scheme, sep, rest = str(url).partition('://')
    cut = re.search(r'[/?#]', rest)
    found = list(url_secrets(url)) + [str(url)]
    if cut:
        tail = rest[cut.start():]
        found.append(tail)
        found += [s for s in re.split(r'[/?#&=]', tail)
                  if len(s) >= 16 and re.search(r'\d', s)]
    return found


class Webhook:
    """Posts notices to ``url`` as ``format``.

    :param url: the webhook URL (a secret: it is declared with ``add_secret``).
    :param format: ``slack``, ``teams`` or ``json``.
    :param connect_timeout: seconds to connect at most.
    :param request_timeout: seconds the whole request may take at most.

    Use it on one loop: its HTTP client is made on the first :meth:`send`, on the
    current loop; :meth:`close` closes it.
    """

    def __init__(self, url: str, format: str = 'slack', *, connect_timeout: float = 10.0,
                 request_timeout: float = 30.0) -> None:
        if format not in FORMATS:
            raise ValueError('unknown webhook format %r (one of %s)'
                             % (format, ', '.join(FORMATS)))
        self.url = url
        self.format = format
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        #: The URL as logs show it.
        self.shown_url = redact_webhook(url)
        self.secrets = tuple(_webhook_secrets(url))
        add_secret(*self.secrets)
        # Imported for a webhook only, not with the module: tornado's HTTP client (with
        # tornado.httputil, tornado.iostream and http.client) weighs about 0.7 MiB more
        # than what alerts sent by mail alone load.
        from tornado import httpclient
        self._http = httpclient
        self._client: Any = None  # an AsyncHTTPClient, made on the first send

    def body(self, notice: Notice, dropped: int = 0) -> bytes:
        return json.dumps(render(notice, self.format, dropped)).encode('utf-8')

    async def send(self, notice: Notice, dropped: int = 0) -> None:
        """Post ``notice``; return once the receiver said 2xx. Raises
        :exc:`~circus_plugins.alerts._outbox.SendError` otherwise (``retry_after`` set from a
        429's ``Retry-After``), its message safe to log."""
        if self._client is None:
            self._client = self._http.AsyncHTTPClient(force_instance=True)
        request = self._http.HTTPRequest(
            self.url, method='POST', body=self.body(notice, dropped),
            headers={'Content-Type': 'application/json; charset=utf-8'},
            connect_timeout=self.connect_timeout, request_timeout=self.request_timeout,
            follow_redirects=False)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except Exception as exc:  # no answer: refused, reset, timeout (599), DNS, TLS
            raise SendError('%s: %s' % (self.shown_url, redact_text(
                '%s: %s' % (type(exc).__name__, exc), self.secrets))) from None
        if 200 <= response.code < 300:
            return
        said = redact_text((response.body or b'')[:200].decode('utf-8', 'replace'),
                           self.secrets)
        said = re.sub(r'[\x00-\x1f\x7f]+', ' ', said).strip()
        message = '%s answered %d %s%s' % (self.shown_url, response.code, response.reason,
                                          ': ' + said if said else '')
        retry_after = None
        if response.code == 429:
            retry_after = retry_after_seconds(response.headers.get('Retry-After'))
        raise SendError(message, retry_after=retry_after)

    def close(self) -> None:
        """Close the HTTP client (on its loop)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
