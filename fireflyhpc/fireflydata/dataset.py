"""Write and read a whole Firefly dataset directory.

A dataset directory holds the ``.ffly`` particle files, a settings file and
``filenames.json``, the manifest Firefly's web app starts from::

    {"Gas":     [["<dir>/<prefix>Gas000.ffly", 200000], ...],
     "options": [["<dir>/<prefix>Settings.json", 0]]}

Every path starts with the dataset directory's own name (Firefly's app resolves
it against its ``data/`` folder). The settings file is a JSON object of
per-group dictionaries (``partsColors``, ``partsSizeMultipliers``,
``showParts``...), scene keys (``center``, ``camera``, ``title``...) and
``"loaded": true``, which Firefly's app waits for before it draws.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from fireflyhpc.fireflydata.ffly import FireflyFormatError, ParticleData, read_ffly, write_ffly
from fireflyhpc.fsutil import atomic_write

MANIFEST = "filenames.json"
RESERVED_KEYS = ("options", "tweenParams")


@dataclass
class ParticleGroup:
    """One named group of particles with how it should look.

    ``color`` is RGBA in 0..1, ``size`` Firefly's ``partsSizeMultipliers``.
    """

    name: str
    data: ParticleData
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    size: float = 0.1
    visible: bool = True


@dataclass
class DatasetInfo:
    """What a dataset directory's manifest says.

    ``groups`` maps each group name to its files (paths relative to the dataset
    directory) and particle counts; ``settings`` is the parsed settings file
    (empty if there is none).
    """

    root: Path
    groups: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def npart(self, group: str | None = None) -> int:
        """Particles in ``group``, or in all groups."""
        names = [group] if group else list(self.groups)
        return sum(n for name in names for _path, n in self.groups[name])


def _slice(values: Any, start: int, stop: int, width: int) -> Any:
    return None if values is None else values[start * width:stop * width]


def _chunks(data: ParticleData, per_file: int) -> Iterator[ParticleData]:
    """Split ``data`` into consecutive pieces of at most ``per_file`` particles."""
    n = data.npart
    for start in range(0, max(n, 1), per_file):
        stop = min(n, start + per_file)
        yield ParticleData(
            data.coordinates[3 * start:3 * stop],
            _slice(data.velocities, start, stop, 3),
            _slice(data.rgba_colors, start, stop, 4),
            {k: v[start:stop] for k, v in data.fields.items()},
            data.filter_flags, data.colormap_flags, data.radius_flags,
        )


def _write_json(path: Path, content: Any) -> None:
    """Write JSON atomically, with the permissions a plain new file gets (umask)."""
    atomic_write(path, json.dumps(content, separators=(",", ":")), mode=None)


# Every per-group key Firefly's Python Settings writes, with its default; Firefly's
#  web app reads several of them (colormap*, showColormap...) without checking.
_GROUP_DEFAULTS: dict[str, Any] = {
    "plotNmax": None, "radiusVariable": 0, "showVel": None, "velType": None,
    "velVectorWidth": None, "velGradient": None, "animateVel": None, "animateVelDt": None,
    "animateVelTmax": None, "colormap": 1.0 / 64, "colormapVariable": None,
    "showColormap": None, "blendingMode": None, "depthTest": None, "brightCenterFraction": None,
}


def _group_settings(group: ParticleGroup) -> dict[str, Any]:
    data = group.data
    names = list(data.fields)
    filterable = [n for n, f in zip(names, data.filter_flags or [], strict=True) if f]
    mappable = [n for n, f in zip(names, data.colormap_flags or [], strict=True) if f]
    return {
        "partsColors": list(group.color), "partsSizeMultipliers": group.size,
        "showParts": group.visible, **_GROUP_DEFAULTS,
        "filterVals": dict.fromkeys(filterable), "filterLims": dict.fromkeys(filterable),
        "invertFilter": {}, "colormapVals": dict.fromkeys(mappable),
        "colormapLims": dict.fromkeys(mappable),
    }


def settings_for(groups: Sequence[ParticleGroup], **scene: Any) -> dict[str, Any]:
    """Firefly settings for ``groups`` plus scene keys (center, camera, title...).

    The result has the shape of Firefly's own settings files: one dictionary
    per setting, keyed by group name, then the scene keys and ``loaded``.
    """
    per_group = {g.name: _group_settings(g) for g in groups}
    keys = next(iter(per_group.values()), {}).keys()
    settings: dict[str, Any] = {
        key: {name: s[key] for name, s in per_group.items()} for key in keys}
    settings.update({k: v for k, v in scene.items() if v is not None})
    settings["loaded"] = True
    return settings


def write_dataset(directory: Path, groups: Sequence[ParticleGroup], *,
                  max_per_file: int = 100_000, prefix: str = "Data",
                  **scene: Any) -> Path:
    """Write ``groups`` as a Firefly dataset into ``directory`` (created if needed).

    Each group is split into files of at most ``max_per_file`` particles. Scene
    keywords (``center``, ``camera``, ``title``...) go into the settings file.
    Returns the path of the written ``filenames.json``. Raises
    FireflyFormatError for bad names or data, OSError for I/O problems.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = directory.resolve().name
    manifest: dict[str, list[list[Any]]] = {}
    for group in groups:
        if not group.name or group.name in RESERVED_KEYS or "/" in group.name:
            raise FireflyFormatError(f"invalid particle group name {group.name!r}")
        if group.name in manifest:
            raise FireflyFormatError(f"duplicate particle group name {group.name!r}")
        entries = []
        for i, chunk in enumerate(_chunks(group.data, max_per_file)):
            fname = f"{prefix}{group.name}{i:03d}.ffly"
            write_ffly(directory / fname, chunk)
            entries.append([f"{base}/{fname}", chunk.npart])
        manifest[group.name] = entries
    settings_name = f"{prefix}Settings.json"
    _write_json(directory / settings_name, settings_for(groups, **scene))
    manifest["options"] = [[f"{base}/{settings_name}", 0]]
    _write_json(directory / MANIFEST, manifest)
    return directory / MANIFEST


def local_path(entry: str) -> str:
    """A manifest path relative to the dataset directory.

    Firefly writes ``<dataset dir name>/<file>``; the first component is
    dropped so the dataset can be read (and served) under any name.
    """
    parts = [p for p in entry.replace("\\", "/").split("/") if p]
    if any(p == ".." for p in parts) or not parts:
        raise FireflyFormatError(f"unsafe path in {MANIFEST}: {entry!r}")
    return "/".join(parts[1:] if len(parts) > 1 else parts)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FireflyFormatError(f"{path}: not valid JSON ({exc})") from None


def read_manifest(path: Path) -> dict[str, list[Any]]:
    """``filenames.json`` at ``path``: a JSON object whose every value is a list.

    Raises FireflyFormatError naming the file when it is not; OSError if it
    cannot be read.
    """
    manifest = _load_json(path)
    if not isinstance(manifest, dict):
        raise FireflyFormatError(f"{path}: expected a JSON object")
    for key, entries in manifest.items():
        if not isinstance(entries, list):
            raise FireflyFormatError(f"{path}: {key!r} is not a list")
    return manifest


def read_dataset(directory: Path) -> DatasetInfo:
    """Parse ``directory``'s ``filenames.json`` and its settings file.

    Raises FireflyFormatError if the manifest is missing or malformed.
    """
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise FireflyFormatError(f"{directory}: no {MANIFEST}, not a Firefly dataset")
    manifest = read_manifest(directory / MANIFEST)
    info = DatasetInfo(directory)
    for key, entries in manifest.items():
        files = []
        for entry in entries:
            path, count = (entry[0], entry[1]) if isinstance(entry, list) else (entry, 0)
            files.append((local_path(str(path)), int(count)))
        if key == "options":
            if files:
                info.settings = _load_json(directory / files[0][0])
        elif key not in RESERVED_KEYS:
            info.groups[key] = files
    return info


_JSON_SPECIAL = ("Coordinates", "Coordinates_flat", "Velocities", "Velocities_flat",
                 "rgbaColors_flat", "filterKeys", "colormapKeys", "radiusKeys")


def _flat(values: Any) -> "array[float]":
    """Firefly's older JSON files hold [[x, y, z], ...]; newer ones a flat list."""
    nested = bool(values) and isinstance(values[0], list)
    return array("f", [v for row in values for v in row] if nested else values)


def particles_from_json(content: Any, where: str) -> ParticleData:
    """A Firefly JSON particle file (the format before ``.ffly``) as ParticleData.

    Keys: ``Coordinates_flat`` (or ``Coordinates``), optional ``Velocities_flat``
    and ``rgbaColors_flat``, one list per scalar field, and ``filterKeys``,
    ``colormapKeys``, ``radiusKeys`` naming the fields each flag applies to.
    """
    if not isinstance(content, dict) or "octree" in content:
        raise FireflyFormatError(
            f"{where}: not a particle file (octree datasets are not supported)")
    try:
        coords = _flat(content.get("Coordinates_flat") or content["Coordinates"])
        vel = content.get("Velocities_flat") or content.get("Velocities")
        names = [k for k, v in content.items() if k not in _JSON_SPECIAL and isinstance(v, list)]
        rgba = content.get("rgbaColors_flat")
        return ParticleData(
            coords, None if vel is None else _flat(vel), None if rgba is None else _flat(rgba),
            {k: _flat(content[k]) for k in names},
            [k in content.get("filterKeys", []) for k in names],
            [k in content.get("colormapKeys", []) for k in names],
            [k in content.get("radiusKeys", []) for k in names])
    except (KeyError, TypeError) as exc:
        raise FireflyFormatError(f"{where}: not a Firefly particle file ({exc})") from None


def read_particle_file(path: Path) -> ParticleData:
    """Read a ``.ffly`` file, or a Firefly JSON particle file (``.json``)."""
    if path.suffix.lower() == ".json":
        return particles_from_json(_load_json(path), str(path))
    if path.suffix.lower() != ".ffly":
        raise FireflyFormatError(f"{path}: not a .ffly or .json particle file")
    return read_ffly(path)


def read_group(info: DatasetInfo, name: str) -> ParticleData:
    """Read and concatenate every particle file of group ``name``.

    Raises KeyError for an unknown group, FireflyFormatError for files that are
    not particle files (octree datasets) or do not match the manifest's counts.
    """
    parts = []
    for rel, count in info.groups[name]:
        data = read_particle_file(info.root / rel)
        if data.npart != count:
            raise FireflyFormatError(f"{rel}: holds {data.npart} particles, manifest says {count}")
        parts.append(data)
    if not parts:
        return ParticleData(array("f"))
    return _concatenate(parts)


def _join(arrays: "list[array[float] | None]") -> "array[float] | None":
    """One array from several, or None if the first is None (all files agree)."""
    if arrays[0] is None:
        return None
    out = array("f")
    for values in arrays:
        if values is None:
            raise FireflyFormatError("the files of one group disagree on their columns")
        out.extend(values)
    return out


def _concatenate(parts: list[ParticleData]) -> ParticleData:
    first = parts[0]
    fields = {}
    for name in first.fields:
        if any(name not in p.fields for p in parts):
            raise FireflyFormatError(f"field {name!r} is missing from some files of the group")
        fields[name] = _join([p.fields[name] for p in parts]) or array("f")
    return ParticleData(
        _join([p.coordinates for p in parts]) or array("f"),
        _join([p.velocities for p in parts]),
        _join([p.rgba_colors for p in parts]),
        fields, first.filter_flags, first.colormap_flags, first.radius_flags,
    )
