"""Encode and decode Firefly's binary particle files (``.ffly``, "format 1").

Layout (little endian), as Firefly's web app parses it:

====================  =====================================================
u32                   header size (informational; see below)
u8, u8                has velocities, has RGBA colours
u32, u32              number of particles N, number of scalar fields F
F times: u32 + bytes  field name: byte length, then UTF-8 text
3 x F bytes           filter flags, colormap flags, radius flags (one byte each)
f32 x 3N              coordinates, x y z per particle
f32 x 3N (optional)   velocities
f32 x 4N (optional)   RGBA colours
f32 x N, F times      the scalar fields, in header order
====================  =====================================================

Readers (Firefly's and ours) walk the header field by field and do not trust
the header size. Firefly's Python writer stores 14 + 4·Σ(1 + len(name)) + 3·F,
which over-counts the names; we store the same number so our files are
byte-identical to Firefly's (unshuffled) output.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from fireflyhpc.errors import ConfigError


class FireflyFormatError(ConfigError):
    """A file is not valid Firefly data (truncated, inconsistent, bad JSON)."""


_HEAD = struct.Struct("<IBBII")


def _floats(values: "array[float] | list[float] | tuple[float, ...]") -> "array[float]":
    return values if isinstance(values, array) and values.typecode == "f" else array("f", values)


def _le_bytes(values: "array[float]") -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("f", values)
    swapped.byteswap()
    return swapped.tobytes()


def _from_le(data: bytes | memoryview) -> "array[float]":
    values = array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def _flags(given: list[bool] | None, default: bool, count: int) -> list[bool]:
    return [bool(f) for f in given] if given is not None else [default] * count


@dataclass
class ParticleData:
    """The particles of one ``.ffly`` file; every array is flat float32.

    ``coordinates`` holds x, y, z per particle; ``velocities`` the same or None;
    ``rgba_colors`` r, g, b, a per particle or None; ``fields`` maps each scalar
    field's name to one value per particle. The three flag lists hold one bool
    per field (filterable, colormappable, may scale the radius).
    """

    coordinates: "array[float]"
    velocities: "array[float] | None" = None
    rgba_colors: "array[float] | None" = None
    fields: "dict[str, array[float]]" = field(default_factory=dict)
    filter_flags: list[bool] | None = None
    colormap_flags: list[bool] | None = None
    radius_flags: list[bool] | None = None

    def __post_init__(self) -> None:
        self.coordinates = _floats(self.coordinates)
        if self.velocities is not None:
            self.velocities = _floats(self.velocities)
        if self.rgba_colors is not None:
            self.rgba_colors = _floats(self.rgba_colors)
        self.fields = {name: _floats(v) for name, v in self.fields.items()}
        nfields = len(self.fields)
        self.filter_flags = _flags(self.filter_flags, True, nfields)
        self.colormap_flags = _flags(self.colormap_flags, True, nfields)
        self.radius_flags = _flags(self.radius_flags, False, nfields)
        self.validate()

    @property
    def npart(self) -> int:
        """Number of particles."""
        return len(self.coordinates) // 3

    def validate(self) -> None:
        """Raise :class:`FireflyFormatError` unless every array fits ``npart``."""
        n = self.npart
        if len(self.coordinates) != 3 * n:
            raise FireflyFormatError("coordinates must hold 3 values per particle")
        if self.velocities is not None and len(self.velocities) != 3 * n:
            raise FireflyFormatError("velocities must hold 3 values per particle")
        if self.rgba_colors is not None and len(self.rgba_colors) != 4 * n:
            raise FireflyFormatError("rgba_colors must hold 4 values per particle")
        for name, values in self.fields.items():
            if len(values) != n:
                raise FireflyFormatError(f"field {name!r} must hold 1 value per particle")
        for flags in (self.filter_flags, self.colormap_flags, self.radius_flags):
            if flags is None or len(flags) != len(self.fields):
                raise FireflyFormatError("each flag list must hold one flag per field")


def header_size_value(field_names: list[str]) -> int:
    """The number Firefly's Python writer stores as the header size."""
    names = sum(4 * (1 + len(name.encode("utf-8"))) for name in field_names)
    return 14 + names + 3 * len(field_names)


def encode(data: ParticleData) -> bytes:
    """Return the ``.ffly`` bytes for ``data`` (raises FireflyFormatError if inconsistent)."""
    data.validate()
    names = list(data.fields)
    parts = [_HEAD.pack(header_size_value(names), data.velocities is not None,
                        data.rgba_colors is not None, data.npart, len(names))]
    for name in names:
        raw = name.encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    for flags in (data.filter_flags, data.colormap_flags, data.radius_flags):
        parts.append(bytes(bool(f) for f in flags or []))
    parts.append(_le_bytes(data.coordinates))
    for optional in (data.velocities, data.rgba_colors):
        if optional is not None:
            parts.append(_le_bytes(optional))
    parts.extend(_le_bytes(values) for values in data.fields.values())
    return b"".join(parts)


class _Cursor:
    """Reads a byte buffer front to back; a short read is a FireflyFormatError."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.view):
            raise FireflyFormatError(f"truncated .ffly data while reading {what}")
        chunk = self.view[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def decode(raw: bytes) -> ParticleData:
    """Parse ``.ffly`` bytes; raises :class:`FireflyFormatError` if they are not valid."""
    cur = _Cursor(raw)
    _size, has_vel, has_rgba, npart, nfields = _HEAD.unpack(cur.take(_HEAD.size, "header"))
    if has_vel > 1 or has_rgba > 1:
        raise FireflyFormatError("not a Firefly .ffly file (bad header flags)")
    if nfields > 10_000 or 12 * npart > len(raw):
        raise FireflyFormatError("not a Firefly .ffly file (implausible header)")
    names = []
    for _ in range(nfields):
        try:
            names.append(bytes(cur.take(cur.u32("field name"), "field name")).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise FireflyFormatError("field name is not UTF-8") from exc
    flags = [[bool(b) for b in cur.take(nfields, "flags")] for _ in range(3)]
    coordinates = _from_le(cur.take(12 * npart, "coordinates"))
    velocities = _from_le(cur.take(12 * npart, "velocities")) if has_vel else None
    rgba = _from_le(cur.take(16 * npart, "colours")) if has_rgba else None
    fields = {name: _from_le(cur.take(4 * npart, f"field {name!r}")) for name in names}
    if cur.pos != len(raw):
        raise FireflyFormatError(f"{len(raw) - cur.pos} unexpected bytes after the particle data")
    return ParticleData(coordinates, velocities, rgba, fields, *flags)


def write_ffly(path: Path, data: ParticleData) -> int:
    """Write ``data`` to ``path``; return the number of bytes written."""
    raw = encode(data)
    Path(path).write_bytes(raw)
    return len(raw)


def read_ffly(path: Path) -> ParticleData:
    """Read one ``.ffly`` file (raises FireflyFormatError, OSError)."""
    try:
        return decode(Path(path).read_bytes())
    except FireflyFormatError as exc:
        raise FireflyFormatError(f"{path}: {exc}") from None
