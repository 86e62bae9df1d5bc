"""The ``--demo`` dataset: a synthetic disk galaxy in Firefly's format.

About a million particles in three groups (disk stars in spiral arms, a bulge,
gas hugging the arms), written once by our own writer into the user's cache
directory and reused afterwards. Pure Python (``random``, ``math``, ``array``):
no numpy at run time.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import tempfile
from array import array
from pathlib import Path

import platformdirs

from fireflyhpc.fireflydata import ParticleData, ParticleGroup, write_dataset

log = logging.getLogger(__name__)

DEMO_NAME = "demo-galaxy"
DEMO_VERSION = 2  # bump when the demo's content changes; old caches are ignored
COUNTS = {"DiskStars": 520_000, "BulgeStars": 160_000, "Gas": 320_000}
PER_FILE = 200_000
SEED = 20240517

_ARMS = 2
_PITCH = math.radians(14.0)  # logarithmic spiral pitch angle


def _disk(rng: random.Random, n: int, scale: float, height: float, arm_share: float,
          arm_width: float) -> "array[float]":
    """x, y, z of ``n`` particles in an exponential disk, ``arm_share`` of them in arms."""
    out = array("f", bytes(12 * n))
    gamma, gauss, rand = rng.gammavariate, rng.gauss, rng.random
    cot = 1.0 / math.tan(_PITCH)
    cos, sin, log_ = math.cos, math.sin, math.log
    for i in range(n):
        # surface density ~ exp(-r/scale): r follows Gamma(2, scale)
        r = gamma(2.0, scale) + 0.05
        if rand() < arm_share:
            arm = (rand() < 0.5) * math.pi
            phi = arm + cot * log_(r) + gauss(0.0, arm_width)
        else:
            phi = 6.283185307179586 * rand()
        z = gauss(0.0, height * (0.6 + 0.4 * r / scale))
        j = 3 * i
        out[j] = r * cos(phi)
        out[j + 1] = r * sin(phi)
        out[j + 2] = z
    return out


def _bulge(rng: random.Random, n: int, scale: float) -> "array[float]":
    """x, y, z of ``n`` particles in a slightly flattened spheroid."""
    out = array("f", bytes(12 * n))
    gauss = rng.gauss
    for i in range(n):
        j = 3 * i
        out[j] = gauss(0.0, scale)
        out[j + 1] = gauss(0.0, scale)
        out[j + 2] = gauss(0.0, 0.7 * scale)
    return out


def build_groups(scale: float = 1.0, seed: int = SEED) -> list[ParticleGroup]:
    """The demo's particle groups (deterministic for a given seed); lengths in kpc.

    ``scale`` multiplies the particle counts (tests use small values).
    """
    rng = random.Random(seed)
    counts = {k: max(1, int(v * scale)) for k, v in COUNTS.items()}
    return [
        ParticleGroup("DiskStars",
                      ParticleData(_disk(rng, counts["DiskStars"], 3.0, 0.25, 0.5, 0.3)),
                      color=(1.0, 0.85, 0.6, 1.0), size=0.03),
        ParticleGroup("BulgeStars", ParticleData(_bulge(rng, counts["BulgeStars"], 1.1)),
                      color=(1.0, 0.65, 0.35, 1.0), size=0.03),
        ParticleGroup("Gas", ParticleData(_disk(rng, counts["Gas"], 4.0, 0.12, 0.85, 0.18)),
                      color=(0.35, 0.6, 1.0, 1.0), size=0.05),
    ]


def default_cache_dir() -> Path:
    """Where the demo lives: ``<user cache dir>/fireflyhpc``."""
    return Path(platformdirs.user_cache_dir("fireflyhpc", appauthor=False))


def write_demo(directory: Path, scale: float = 1.0) -> Path:
    """Generate the demo galaxy into ``directory`` (a dataset named like the directory)."""
    write_dataset(directory, build_groups(scale), max_per_file=PER_FILE,
                  title="fireflyhpc demo galaxy", center=[0.0, 0.0, 0.0],
                  camera=[0.0, -34.0, 24.0])
    return directory


def ensure_demo(cache_dir: Path | None = None) -> Path:
    """Return the demo dataset directory, generating it on first use.

    The dataset is built in a temporary directory next to its final place and
    renamed into place, so a half-written demo is never used and two processes
    racing to build it both end up with a complete one. Raises OSError if the
    cache directory cannot be written.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    parent = base / f"demo-v{DEMO_VERSION}"
    target = parent / DEMO_NAME
    if (target / "filenames.json").is_file():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    log.info("generating the demo galaxy in %s (once)", target)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
    try:
        built = write_demo(tmp / DEMO_NAME)
        try:
            os.rename(built, target)
        except OSError:
            if not (target / "filenames.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
