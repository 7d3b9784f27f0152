"""The Prometheus exporter's rendered pages, kept per format and rendered ahead.

Rendering a page of a hundred watchers with ``prometheus_client``'s encoders takes
milliseconds (the OpenMetrics one about twice the text one), gzip one more: too long to
do in every scrape. :class:`Pages` keeps each page it has served, by content type and
compression, with the snapshot version it shows. A scrape of an unchanged snapshot gets
the bytes as they are; :meth:`Pages.refresh`, called soon after the snapshot changes,
renders again the pages that scrapers have asked for, so that a scrape seldom waits for
a render. A request restricted with ``name[]`` is rendered for itself, never kept.
"""
import gzip
import time
from typing import Any, Callable, Dict, Sequence, Tuple

__all__ = ['Pages']

#: Pages kept at most: the ``Accept`` header is the client's, and each OpenMetrics
#: version and escaping it names is a content type of its own.
MOST_PAGES = 8
#: Seconds after which a page no one has asked for is no longer rendered ahead.
IDLE_PAGE = 600.0


class _Registry:
    """What ``prometheus_client``'s encoders take: anything with ``collect()``."""

    def __init__(self, collect: Callable[[], Any], names: frozenset = frozenset()) -> None:
        self._collect, self.names = collect, names

    def collect(self):
        for family in self._collect():
            if not self.names or family.name in self.names or any(
                    sample.name in self.names for sample in family.samples):
                yield family


class Pages:
    """Rendered pages of ``snapshot`` (a :class:`~circus_plugins.prometheus._metrics.Snapshot`),
    with ``exposition`` (``prometheus_client.exposition``). On one thread (the loop)."""

    def __init__(self, snapshot: Any, exposition: Any) -> None:
        self.snapshot, self.exposition = snapshot, exposition
        # (content type, gzipped) -> (snapshot version, encoder, body)
        self._pages: Dict[Tuple[str, bool], Tuple[int, Any, bytes]] = {}
        self._asked: Dict[Tuple[str, bool], float] = {}  # when each was last asked for
        #: Pages rendered so far (scrapes that found theirs ready are not counted).
        self.renders = 0

    def page(self, accept: str, accept_encoding: str, names: Sequence[str] = ()
             ) -> Tuple[bytes, str, bool]:
        """``(body, content type, gzipped)`` for a request's ``Accept`` and
        ``Accept-Encoding`` headers and its ``name[]`` arguments."""
        encoder, content_type = self.exposition.choose_encoder(accept)
        gzipped = bool(self.exposition.gzip_accepted(accept_encoding))
        if names:
            registry = _Registry(self.snapshot.collect, frozenset(names))
            return self._encode(encoder, registry, gzipped), content_type, gzipped
        key = (content_type, gzipped)
        self._asked[key] = time.monotonic()
        kept = self._pages.get(key)
        if kept is not None and kept[0] == self.snapshot.version:
            return kept[2], content_type, gzipped
        body = self._render(key, encoder)
        return body, content_type, gzipped

    def stale(self) -> bool:
        """Whether a kept page no longer shows the snapshot."""
        return any(version != self.snapshot.version for version, _, _ in
                   self._pages.values())

    def refresh_one(self) -> bool:
        """Render again one kept page that no longer shows the snapshot (forgetting
        those no one asked for in :data:`IDLE_PAGE` seconds); whether more are left."""
        now = time.monotonic()
        for key in [k for k, when in self._asked.items() if now - when > IDLE_PAGE]:
            self._pages.pop(key, None)
            del self._asked[key]
        stale = [(k, e) for k, (v, e, _) in self._pages.items()
                 if v != self.snapshot.version]
        if stale:
            self._render(*stale[0])
        return len(stale) > 1

    def refresh(self) -> None:
        """Render again every kept page that no longer shows the snapshot."""
        while self.refresh_one():
            pass

    def _render(self, key: Tuple[str, bool], encoder: Any) -> bytes:
        version = self.snapshot.version
        body = self._encode(encoder, _Registry(self.snapshot.collect), key[1])
        if key in self._pages or len(self._pages) < MOST_PAGES:
            self._pages[key] = (version, encoder, body)
        return body

    def _encode(self, encoder: Any, registry: _Registry, gzipped: bool) -> bytes:
        self.renders += 1
        body = encoder(registry)
        return gzip.compress(body, compresslevel=6) if gzipped else body
