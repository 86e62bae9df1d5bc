"""A real headless Chromium opens the URL `fireflyhpc connect` prints: the bundled viewer,
served from the compute node through the tunnel, draws the demo galaxy; and a
session's ``iframe()`` shows it inside a notebook page on ``localhost``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from connect_e2e_helpers import assert_nothing_left, url_parts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viewer"))
import viewer_chromium  # noqa: E402  (the shared DevTools driver of the viewer tests)
from notebook_pages import NotebookHost, open_notebook  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.browser]
READY = "['ready', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"
SCENE = (0.35, 0.05, 1.0, 0.95)  # right of the viewer's side panel


def test_connect_url_shows_the_demo_in_chromium(bench) -> None:  # type: ignore[no-untyped-def]
    run = bench.connect()
    url = run.wait_url()
    port, _ = url_parts(url)
    job_id = next(s for s in bench.sessions() if s["local_port"] == port)["job_id"]
    try:
        with viewer_chromium.Chromium() as chrome:
            page = chrome.new_page()
            page.navigate(url)
            assert page.wait_for(READY, timeout=120) == "ready"
            assert page.evaluate("window.fireflyViewer.particles") > 0
            assert "token=" not in page.evaluate("location.href")
            assert viewer_chromium.lit_pixels(page.screenshot(), box=SCENE) > 20_000
            page.close()
    finally:
        rc = run.stop(signal.SIGINT)
    assert rc == 0, run.stderr_text
    assert_nothing_left(bench, job_id, port)


def test_session_iframe_in_a_localhost_notebook(bench, cleanup_jobs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Session.iframe() from fireflyhpc.connect(): a notebook page on localhost (another
    site than the tunnel's 127.0.0.1) shows the viewer from the node."""
    import fireflyhpc

    monkeypatch.setenv("XDG_STATE_HOME", str(bench.state_home))
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    host = NotebookHost("127.0.0.1")
    try:
        with fireflyhpc.connect(cluster="mini", job=job_id, config=str(bench.config),
                                ssh_config=str(bench.cluster.ssh_config)) as session, \
                viewer_chromium.Chromium() as chrome:
            port, token = url_parts(session.url)
            cell = session.iframe(width=800, height=600)._repr_html_()
            assert token not in cell
            page = chrome.new_page()
            origin = f"http://127.0.0.1:{port}"
            assert open_notebook(page, host.page("cell", cell, "localhost"), origin) == "ready"
            assert page.evaluate("window.fireflyViewer.particles", origin) == 1_000_000
            assert "/_frame/" in page.evaluate("location.pathname", origin)
            page.close()
    finally:
        host.close()
    assert_nothing_left(bench, job_id, port, job_gone=False)
