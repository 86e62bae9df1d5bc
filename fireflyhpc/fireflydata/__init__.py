"""Firefly's data format: ``.ffly`` particle files, ``filenames.json``, settings.

Written from the format as Firefly's web app and Python package use it; no
numpy needed.
"""

from fireflyhpc.fireflydata.dataset import (
    DatasetInfo,
    ParticleGroup,
    read_dataset,
    read_group,
    settings_for,
    write_dataset,
)
from fireflyhpc.fireflydata.ffly import (
    FireflyFormatError,
    ParticleData,
    decode,
    encode,
    read_ffly,
    write_ffly,
)

__all__ = [
    "DatasetInfo", "FireflyFormatError", "ParticleData", "ParticleGroup", "decode", "encode",
    "read_dataset", "read_ffly", "read_group", "settings_for", "write_dataset", "write_ffly",
]
