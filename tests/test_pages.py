"""_pages.Pages: pages kept per format, served as they are while the snapshot is unchanged,
rendered again ahead of the next scrape."""
import gzip

from prometheus_client import exposition

from circus_plugins.prometheus import _pages
from circus_plugins.prometheus._metrics import Snapshot
from circus_plugins.prometheus._pages import Pages

OPENMETRICS = 'application/openmetrics-text; version=1.0.0'


def pages():
    snapshot = Snapshot()
    snapshot.polled({'web': 'active'}, {}, {'web': 2}, {})
    return snapshot, Pages(snapshot, exposition)


def test_an_unchanged_snapshot_is_served_without_rendering():
    snapshot, kept = pages()
    body, content_type, gzipped = kept.page('', '')
    assert content_type.startswith('text/plain') and not gzipped
    assert kept.page('', '') == (body, content_type, False) and kept.renders == 1
    snapshot.spawned('web')
    assert b'circus_watcher_spawns_total{watcher="web"} 1.0' in kept.page('', '')[0]
    assert kept.renders == 2


def test_refresh_renders_again_the_kept_pages_that_are_stale_only():
    snapshot, kept = pages()
    kept.page('', '')
    kept.page(OPENMETRICS, 'gzip')
    assert not kept.stale()
    kept.refresh()
    assert kept.renders == 2                       # nothing was stale
    snapshot.spawned('web')
    assert kept.stale()
    kept.refresh()
    assert kept.renders == 4 and not kept.stale()
    body, content_type, gzipped = kept.page(OPENMETRICS, 'gzip')
    assert kept.renders == 4 and gzipped and content_type.startswith(
        'application/openmetrics-text')
    assert b'circus_watcher_spawns_total{watcher="web"} 1.0' in gzip.decompress(body)


def test_a_restricted_page_is_rendered_for_itself_and_not_kept():
    _, kept = pages()
    body = kept.page('', '', ['circus_up'])[0]
    assert body.decode().splitlines()[-1] == 'circus_up 1.0' and b'watcher' not in body
    assert not kept.stale() and kept.page('', '', ['circus_up'])[0] == body
    assert kept.renders == 2


def test_pages_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(_pages, 'MOST_PAGES', 2)
    _, kept = pages()
    # Three formats apart in every prometheus_client (those before 0.23 answer every
    # OpenMetrics version with 1.0.0's page).
    for accept, encoding in [('', ''), ('', 'gzip'), (OPENMETRICS, '')]:
        kept.page(accept, encoding)
    assert kept.renders == 3 and len(kept._pages) == 2


def test_refresh_one_renders_one_page_a_turn_and_forgets_idle_ones(monkeypatch):
    snapshot, kept = pages()
    kept.page('', '')
    kept.page(OPENMETRICS, '')
    snapshot.spawned('web')
    assert kept.refresh_one() is True and kept.renders == 3   # one now, one left
    assert kept.refresh_one() is False and kept.renders == 4
    monkeypatch.setattr(_pages, 'IDLE_PAGE', -1.0)              # no one asks any more
    snapshot.spawned('web')
    assert kept.refresh_one() is False and kept.renders == 4 and not kept.stale()
