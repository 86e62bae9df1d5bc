"""Notebooks whose kernel runs under a Jupyter server (as on a cluster node): a real
jupyter-server with jupyter-server-proxy, a real kernel under it, and Chromium
loading the frame through the proxy route; without the proxy, one line says what
to do."""

from __future__ import annotations

import http.client
import random
import re
import socket
from pathlib import Path
from typing import Iterator

import pytest
from jupyter_kit import Jupyter, start_jupyter, stop_jupyter
from viewer_chromium import Page

from fireflyhpc.fireflydata import ParticleData, ParticleGroup, write_dataset

pytestmark = pytest.mark.browser

PARTICLES = 5_000
SPAWN = """
import warnings
warnings.simplefilter("always")
from IPython.display import display
from fireflyhpc import spawnFireflyServer
from fireflyhpc.notebook import show
server = spawnFireflyServer(0, directory={data!r}, app="builtin")
print("PORT", server.port)
display(show(server, width=800, height=600))
server
"""
IN_FRAME = "document.querySelector('iframe').contentWindow"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jupyter-data") / "cloud"
    rng = random.Random(9)
    write_dataset(path, [ParticleGroup("Gas", ParticleData([rng.gauss(0, 1) for _ in
                                                            range(3 * PARTICLES)]),
                                       color=(.3, .6, 1, 1), size=0.05)])
    return path


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jupyter]:
    """jupyter-server with jupyter-server-proxy, for the module."""
    server = start_jupyter(tmp_path_factory.mktemp("jupyter"), proxy=True)
    yield server
    stop_jupyter(server.process)


def port_of(out: dict[str, list[str]]) -> int:
    match = re.search(r"PORT (\d+)", "".join(out["stdout"]))
    assert match, out
    return int(match.group(1))


def test_frame_through_the_jupyter_proxy(page: Page, jupyter: Jupyter, dataset: Path) -> None:
    """show() and the spawnFireflyServer handle, in a kernel of the Jupyter server, point
    at <base_url>proxy/<port>/; Chromium on the Jupyter page loads the viewer through
    it; behind the proxy the payload still refuses requests without ticket or token."""
    with jupyter.kernel() as kernel:
        out = kernel.run(SPAWN.format(data=str(dataset)))
        port = port_of(out)
        assert len(out["html"]) == 2 and not out["stderr"], out
        for cell in out["html"]:  # show(server), then the handle as the cell's value
            assert cell.startswith(f'<iframe src="/proxy/{port}/?ticket='), cell
        try:
            page.navigate(f"{jupyter.url}api/status?token={jupyter.token}")  # log in
            page.wait_for("document.body.innerText.includes('started')")
            page.navigate(jupyter.page("notebook.html", out["html"][0]))
            page.wait_for(f"{IN_FRAME}.document.body.dataset.state === 'ready'", timeout=120)
            assert page.evaluate(f"{IN_FRAME}.fireflyViewer.particles") == PARTICLES
            assert page.evaluate(f"{IN_FRAME}.location.pathname").startswith(
                f"/proxy/{port}/_frame/")
            conn = http.client.HTTPConnection("127.0.0.1", jupyter.port, timeout=30)
            conn.request("GET", f"/proxy/{port}/datasets.json",
                         headers={"Authorization": f"token {jupyter.token}"})
            answer = conn.getresponse()
            assert (answer.status, answer.getheader("Server")) == (403, "fireflyhpc")
            conn.close()
        finally:
            kernel.run("server.stop()")


def test_without_the_proxy_one_line_says_what_to_do(tmp_path: Path, dataset: Path) -> None:
    """A Jupyter server without jupyter-server-proxy, on what looks like a compute node
    (SLURM_JOB_ID): the frame keeps the direct address and one warning (for two
    displays) names the two ways out."""
    server = start_jupyter(tmp_path, proxy=False, env={"SLURM_JOB_ID": "42"})
    try:
        with server.kernel() as kernel:
            out = kernel.run(SPAWN.format(data=str(dataset)))
            kernel.run("server.stop()")
    finally:
        stop_jupyter(server.process)
    port = port_of(out)
    for cell in out["html"]:
        assert cell.startswith(f'<iframe src="http://127.0.0.1:{port}/?ticket='), cell
    said = [line for line in "".join(out["stderr"]).splitlines() if "jupyter-server-proxy" in line]
    assert len(said) == 1 and f"fireflyhpc tunnel {socket.gethostname()} {port} --port {port}" \
        in said[0]
