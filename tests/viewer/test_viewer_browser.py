"""The viewers in a real headless Chromium (software WebGL): particles drawn
(screenshot pixels that are not background), no console errors, controls work."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from fireflyhpc.export import export_site
from fireflyhpc.fireflydata import ParticleData, ParticleGroup, write_dataset
from viewer_chromium import Page, lit_pixels, png_pixels

pytestmark = pytest.mark.browser

SCENE = (0.35, 0.05, 1.0, 0.95)  # screenshot area right of the viewer's side panel
READY = "['ready', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"


def open_viewer(page: Page, url: str) -> dict:
    page.navigate(url)
    assert page.wait_for(READY) == "ready", page.evaluate("document.body.innerText")
    return page.evaluate("window.fireflyViewer")


def redraw_after(page: Page, action: str) -> None:
    """Run JS ``action`` and wait until the viewer has drawn a new frame."""
    before = page.evaluate("window.fireflyViewer.draws")
    page.evaluate(action)
    page.wait_for(f"window.fireflyViewer.draws > {before}")


def mouse(page: Page, kind: str, x: float, y: float, **extra: object) -> None:
    page.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})


def test_demo_in_bundled_viewer(page: Page, demo_dataset: Path, tmp_path: Path,
                                http_server: Callable[[Path], str]) -> None:
    """Demo exported, served by python -m http.server: a galaxy, no console errors;
    group toggles, zoom and orbit change the picture."""
    export_site(tmp_path / "site", [demo_dataset])
    state = open_viewer(page, http_server(tmp_path / "site"))
    assert state["particles"] == state["expected"] == 1_000_000
    assert [g["name"] for g in state["groups"]] == ["DiskStars", "BulgeStars", "Gas"]
    assert page.evaluate("document.getElementById('progress').value") == 1
    shot = page.screenshot()
    (tmp_path / "demo.png").write_bytes(shot)
    lit = lit_pixels(shot, box=SCENE)
    assert lit > 20_000, f"only {lit} lit pixels"

    redraw_after(page, "document.querySelectorAll('#groups input').forEach(b => b.click())")
    assert lit_pixels(page.screenshot(), box=SCENE) == 0  # every group hidden: black
    redraw_after(page, "document.querySelectorAll('#groups input').forEach(b => b.click())")
    assert lit_pixels(page.screenshot(), box=SCENE) == lit

    mouse(page, "mouseWheel", 600, 350, deltaX=0, deltaY=-600)  # zoom in
    page.wait_for("window.fireflyViewer.draws > 3")
    zoomed = page.screenshot()
    assert zoomed != shot and lit_pixels(zoomed, box=SCENE) > lit  # closer: the disk fills more
    mouse(page, "mousePressed", 600, 350, button="left", clickCount=1)
    mouse(page, "mouseMoved", 650, 250, button="left", buttons=1)
    mouse(page, "mouseReleased", 650, 250, button="left", clickCount=1)
    page.wait_for("window.fireflyViewer.draws > 4")
    orbited = page.screenshot()
    assert orbited != zoomed
    mouse(page, "mousePressed", 600, 350, button="right", clickCount=1)  # right-drag: pan
    mouse(page, "mouseMoved", 500, 350, button="right", buttons=2)
    mouse(page, "mouseReleased", 500, 350, button="right", clickCount=1)
    page.wait_for("window.fireflyViewer.draws > 5")
    panned = page.screenshot()
    assert panned != orbited
    for kind in ("touchStart", "touchMove", "touchEnd"):  # two-finger pinch: zoom out
        gap = 150 if kind == "touchStart" else 30
        points = [] if kind == "touchEnd" else [{"x": 600 - gap, "y": 350, "id": 1},
                                                {"x": 600 + gap, "y": 350, "id": 2}]
        page.call("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    page.wait_for("window.fireflyViewer.draws > 6")
    assert lit_pixels(page.screenshot(), box=SCENE) < lit_pixels(panned, box=SCENE)
    mouse(page, "mousePressed", 600, 350, button="left", clickCount=2)  # double-click: home view
    mouse(page, "mouseReleased", 600, 350, button="left", clickCount=2)
    page.wait_for("window.fireflyViewer.draws > 7")
    assert page.screenshot() == shot
    assert page.console_errors() == []


def not_red_share(png: bytes) -> float:
    """Fraction of lit scene pixels where green or blue outshines red."""
    width, height, rows = png_pixels(png)
    lit = other = 0
    for row in rows[int(0.05 * height):int(0.95 * height)]:
        for x in range(int(0.35 * width), width):
            r, g, b = row[3 * x:3 * x + 3]
            if max(r, g, b) > 24:
                lit += 1
                other += g > r or b > r
    return other / max(lit, 1)


def test_firefly_reader_dataset_in_bundled_viewer(page: Page, firefly_dataset: Path,
                                                  firefly_json_dataset: Path, tmp_path: Path,
                                                  http_server: Callable[[Path], str]) -> None:
    """Files written by Firefly's own Reader (.ffly and JSON) load; its colours are used;
    the dataset chooser switches."""
    export_site(tmp_path / "site", [firefly_dataset, firefly_json_dataset])
    state = open_viewer(page, http_server(tmp_path / "site"))
    assert state["dataset"] == "ffreader" and state["particles"] == 13_000
    groups = [(g["name"], g["npart"]) for g in state["groups"]]
    assert groups == [("Halo", 10_000), ("Cloud", 3_000)]
    both = page.screenshot()
    (tmp_path / "firefly-reader.png").write_bytes(both)
    assert lit_pixels(both, box=SCENE) > 500
    assert not_red_share(both) > 0.02  # Cloud's random per-particle colours show
    # hide Cloud: what is left is Halo, red (1, 0.2, 0.2) in its settings
    redraw_after(page, "document.querySelectorAll('#groups input')[1].click()")
    assert not_red_share(page.screenshot()) < 0.001
    options = page.evaluate("[...document.querySelectorAll('#dataset option')].map(o => o.value)")
    assert options == ["ffreader", "ffjson"]
    page.evaluate("const s = document.getElementById('dataset'); s.value = 'ffjson';"
                  "s.dispatchEvent(new Event('change'))")
    page.wait_for("window.fireflyViewer.dataset === 'ffjson' && "
                  "document.body.dataset.state === 'ready'")
    assert page.evaluate("window.fireflyViewer.particles") == 500
    assert page.evaluate("location.hash") == "#ffjson"
    assert lit_pixels(page.screenshot(), box=SCENE) > 100
    assert page.console_errors() == []


def test_missing_file_is_reported(page: Page, tmp_path: Path,
                                  http_server: Callable[[Path], str]) -> None:
    """A file listed in filenames.json but absent: the page says so (state "error")."""
    write_dataset(tmp_path / "in" / "broken", [ParticleGroup("P", ParticleData([1.0] * 30))],
                  max_per_file=4)
    export_site(tmp_path / "site", [tmp_path / "in" / "broken"])
    (tmp_path / "site" / "data" / "broken" / "DataP001.ffly").unlink()
    page.navigate(http_server(tmp_path / "site"))
    assert page.wait_for(READY) == "error"
    status = page.evaluate("document.getElementById('status').textContent")
    assert "DataP001.ffly" in status and "404" in status
    assert any("DataP001.ffly" in e for e in page.console_errors())


def firefly_app_site(site: Path, datasets: list[Path]) -> None:
    """Firefly's own web app as a static site: its index.html and static/ (linked, not
    copied), with static/data/ holding our datasets and a startup.json listing them."""
    firefly = pytest.importorskip("firefly")
    src = Path(firefly.__file__).parent
    (site / "static" / "data").mkdir(parents=True)
    shutil.copy(src / "index.html", site / "index.html")
    for entry in (src / "static").iterdir():
        if entry.name != "data":
            (site / "static" / entry.name).symlink_to(entry)
    startup = {}
    for i, dataset in enumerate(datasets):
        (site / "static" / "data" / dataset.name).symlink_to(dataset)
        startup[str(i)] = f"data/{dataset.name}"
    (site / "static" / "data" / "startup.json").write_text(json.dumps(startup))


def firefly_app_screenshot(page: Page) -> bytes:
    """Wait until Firefly's own app has loaded, dropped its splash screen and drawn; screenshot."""
    page.wait_for("typeof viewerParams !== 'undefined' && viewerParams.ready === true", timeout=150)
    page.wait_for("document.getElementById('splash').classList.contains('hidden')", timeout=150)
    # Firefly dims itself ("gone to sleep") when frames are slow, as they are on a
    #  software renderer: take that overlay away to look at the canvas itself
    page.evaluate("document.getElementById('sleep').style.display = 'none'")
    page.wait_frames(3)  # the overlay's removal, and Firefly's render loop, reach the screen
    return page.screenshot()


def test_demo_in_firefly_web_app(page: Page, demo_dataset: Path, tmp_path: Path,
                                 http_server: Callable[[Path], str]) -> None:
    """Our writer's demo, opened by Firefly's own web app: all particles loaded, drawn."""
    firefly_app_site(tmp_path / "ff", [demo_dataset])
    page.navigate(http_server(tmp_path / "ff"))
    shot = firefly_app_screenshot(page)
    assert page.evaluate("countParts()") == 1_000_000
    assert page.evaluate("viewerParams.partsKeys") == ["DiskStars", "BulgeStars", "Gas"]
    assert page.evaluate("viewerParams.partsColors.Gas.slice(0, 3)") == [0.35, 0.6, 1.0]
    (tmp_path / "firefly-app.png").write_bytes(shot)
    assert lit_pixels(shot, box=(0.1, 0.1, 0.9, 0.9)) > 5_000
    assert page.console_errors() == []


def start_serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "fireflyhpc", "serve", "--no-browser", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for _ in range(50):  # bounded: the URL line comes first
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("http://"):
            return proc, line.strip()
    proc.kill()
    raise AssertionError(f"serve printed no URL; stderr: {proc.communicate(timeout=10)[1]}")


@pytest.fixture
def serve_env(demo_dataset: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for `fireflyhpc serve`: a known token, and the cached demo in place."""
    cache = tmp_path / "xdg-cache"
    cache.mkdir()
    (cache / "fireflyhpc").symlink_to(demo_dataset.parent.parent)
    return {**os.environ, "FIREFLYHPC_TOKEN": "t0k3n-for-the-browser-test",
            "XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path)}


@pytest.mark.parametrize("app", ["builtin", "firefly"])
def test_serve_demo_through_token_url(page: Page, serve_env: dict[str, str], app: str) -> None:
    """`fireflyhpc serve --demo`: the token URL sets the cookie, the viewer draws the galaxy."""
    proc, url = start_serve(["--demo", "--app", app], serve_env)
    try:
        assert "token=" in url and re.match(r"http://127\.0\.0\.1:\d+/", url)
        page.navigate(url)
        if app == "builtin":
            page.wait_for(READY)
            assert page.evaluate("document.body.dataset.state") == "ready"
            assert page.evaluate("window.fireflyViewer.particles") == 1_000_000
            assert "token=" not in page.evaluate("location.href")  # redirected to the clean URL
            assert lit_pixels(page.screenshot(), box=SCENE) > 20_000
        else:
            shot = firefly_app_screenshot(page)
            assert page.evaluate("countParts()") == 1_000_000
            assert lit_pixels(shot, box=(0.1, 0.1, 0.9, 0.9)) > 5_000
        assert page.console_errors() == []
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
