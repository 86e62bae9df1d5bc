"""The viewer in a notebook's IFrame, in real Chromium, from notebook pages of
several origins: ``localhost``, ``127.0.0.1`` (another port) and ``127.0.0.2``
(another host). The cell's HTML is exactly what the display object renders, as
Jupyter would put it into its page."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import pytest
from notebook_pages import NotebookHost, open_notebook, origin_of
from viewer_chromium import Page, lit_pixels

from fireflyhpc import notebook
from fireflyhpc.fireflydata import ParticleData, ParticleGroup, write_dataset
from fireflyhpc.server import ServerHandle, spawn_server, spawnFireflyServer

pytestmark = pytest.mark.browser

PARTICLES = 20_000
FRAME_SCENE = (0.32, 0.05, 0.85, 0.8)  # inside an 800x600 frame at the page's corner
CANNOT_LOOK_IN = ("(() => { try { return document.querySelector('iframe').contentWindow"
                  ".location.href } catch (e) { return 'refused' } })()")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset (a cube of stars)."""
    path = tmp_path_factory.mktemp("nb") / "blob"
    rng = random.Random(5)
    points = [rng.gauss(0.0, 1.0) for _ in range(3 * PARTICLES)]
    write_dataset(path, [ParticleGroup("Stars", ParticleData(points), color=(1, .8, .4, 1),
                                       size=0.05)])
    return path


@pytest.fixture(scope="module")
def server(dataset: Path) -> Iterator[ServerHandle]:
    """One token-protected payload (bundled viewer) for the module."""
    handle = spawn_server(dataset, app="builtin")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, NotebookHost]]:
    """Notebook page servers: 127.0.0.1 (also reached as localhost) and 127.0.0.2."""
    first, second = NotebookHost("127.0.0.1"), NotebookHost("127.0.0.2")
    yield {"localhost": first, "127.0.0.1": first, "127.0.0.2": second}
    first.close()
    second.close()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2"])
def test_show_works_from_any_notebook_origin(page: Page, server: ServerHandle,
                                             hosts: dict[str, NotebookHost], host: str,
                                             tmp_path: Path) -> None:
    """notebook.show(handle): the frame loads the viewer with its data; the token is
    nowhere in the notebook page, and the page cannot read the frame's URL."""
    cell = notebook.show(server, width=800, height=600)._repr_html_()
    assert server.token and server.token not in cell and "ticket=" in cell
    url = hosts[host].page(f"show-{host}", cell, host)
    origin = origin_of(server.base_url)
    assert open_notebook(page, url, origin) == "ready"
    assert page.evaluate("window.fireflyViewer.particles", origin) == PARTICLES
    inside = page.evaluate("location.href", origin)
    assert "/_frame/" in inside and "ticket" not in inside and server.token not in inside
    assert page.evaluate(CANNOT_LOOK_IN) == "refused"
    shot = page.screenshot()
    (tmp_path / f"notebook-{host}.png").write_bytes(shot)
    assert lit_pixels(shot, box=FRAME_SCENE) > 500


def test_spawn_firefly_server_display_and_a_used_ticket(page: Page, dataset: Path,
                                                        hosts: dict[str, NotebookHost]) -> None:
    """A handle from spawnFireflyServer displays as the viewer (each display mints its
    own ticket); a page reloaded with a used ticket, or a frame of the bare URL,
    gets a refusal page, not the viewer."""
    handle = spawnFireflyServer(0, directory=str(dataset), app="builtin")
    try:
        origin = origin_of(handle.base_url)
        cell = handle._repr_html_()
        assert handle.token and handle.token not in cell
        url = hosts["localhost"].page("spawn", cell, "localhost")
        assert open_notebook(page, url, origin) == "ready"
        page.navigate("about:blank")
        refused = "document.title.includes('access token needed') && document.body.innerText"
        page.navigate(url)  # the same page again: its ticket is used up
        assert "expired" in page.wait_for(refused, frame_origin=origin)
        bare = hosts["localhost"].page("bare", f'<iframe src="{handle.base_url}"></iframe>',
                                       "localhost")
        page.navigate(bare)
        assert "Access token needed" in page.wait_for(refused, frame_origin=origin)
    finally:
        handle.stop()
