"""The Firefly data format: our .ffly codec and dataset writer/reader, with golden
bytes, round trips, and compatibility both ways with the real `firefly` package."""

from __future__ import annotations

import json
import struct
from array import array
from pathlib import Path

import pytest

from fireflyhpc.fireflydata import (
    FireflyFormatError, ParticleData, ParticleGroup, decode, encode, read_dataset, read_ffly,
    read_group, write_dataset, write_ffly,
)
from fireflyhpc.fireflydata.dataset import local_path, particles_from_json

# Two particles, velocities, one field "T": written out by hand from the layout.
GOLDEN = (
    struct.pack("<IBBII", 14 + 4 * (1 + 1) + 3, 1, 0, 2, 1)
    + struct.pack("<I", 1) + b"T" + b"\x01\x00\x01"
    + struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    + struct.pack("<6f", -1, -2, -3, -4, -5, -6)
    + struct.pack("<2f", 0.5, 0.25)
)


def golden_data() -> ParticleData:
    return ParticleData([1, 2, 3, 4, 5, 6], velocities=[-1, -2, -3, -4, -5, -6],
                        fields={"T": [0.5, 0.25]}, filter_flags=[True],
                        colormap_flags=[False], radius_flags=[True])


def test_encode_matches_golden_bytes() -> None:
    assert encode(golden_data()) == GOLDEN


def test_decode_golden_bytes() -> None:
    data = decode(GOLDEN)
    assert data.npart == 2
    assert list(data.coordinates) == [1, 2, 3, 4, 5, 6]
    assert list(data.velocities or []) == [-1, -2, -3, -4, -5, -6]
    assert data.rgba_colors is None
    assert list(data.fields["T"]) == [0.5, 0.25]
    assert (data.filter_flags, data.colormap_flags, data.radius_flags) == ([True], [False], [True])


def test_round_trip_with_colours_and_unicode_field(tmp_path: Path) -> None:
    data = ParticleData(array("f", range(30)), rgba_colors=[0.1] * 40,
                        fields={"Température": range(10), "Mass": [2.0] * 10})
    write_ffly(tmp_path / "x.ffly", data)
    back = read_ffly(tmp_path / "x.ffly")
    assert back == data
    assert list(back.fields) == ["Température", "Mass"]


def test_empty_file_round_trips() -> None:
    assert decode(encode(ParticleData([]))).npart == 0


@pytest.mark.parametrize("cut", [3, 13, 20, len(GOLDEN) - 1])
def test_truncated_file_is_a_format_error(cut: int) -> None:
    with pytest.raises(FireflyFormatError, match="truncated|implausible"):
        decode(GOLDEN[:cut])


def test_trailing_bytes_and_bad_flags_are_rejected() -> None:
    with pytest.raises(FireflyFormatError, match="unexpected bytes"):
        decode(GOLDEN + b"\0\0\0\0")
    with pytest.raises(FireflyFormatError, match="header flags"):
        decode(GOLDEN[:4] + b"\x07" + GOLDEN[5:])


def test_inconsistent_arrays_are_rejected() -> None:
    with pytest.raises(FireflyFormatError, match="velocities"):
        ParticleData([1, 2, 3], velocities=[1, 2])
    with pytest.raises(FireflyFormatError, match="field 'm'"):
        ParticleData([1, 2, 3], fields={"m": [1, 2]})


def test_dataset_round_trip(tmp_path: Path) -> None:
    stars = ParticleGroup("Stars", ParticleData(array("f", range(3 * 25))), color=(1, 0, 0, 1),
                          size=0.7)
    gas = ParticleGroup("Gas", ParticleData([0.0] * 30, fields={"rho": range(10)}), visible=False)
    manifest = write_dataset(tmp_path / "snap", [stars, gas], max_per_file=10, center=[1, 2, 3])
    raw = json.loads(manifest.read_text())
    assert raw["Stars"] == [["snap/DataStars000.ffly", 10], ["snap/DataStars001.ffly", 10],
                            ["snap/DataStars002.ffly", 5]]
    assert raw["options"] == [["snap/DataSettings.json", 0]]
    info = read_dataset(tmp_path / "snap")
    assert list(info.groups) == ["Stars", "Gas"] and info.npart() == 35
    assert read_group(info, "Stars") == stars.data
    assert list(read_group(info, "Gas").fields["rho"]) == list(range(10))
    settings = info.settings
    assert settings["partsColors"]["Stars"] == [1, 0, 0, 1]
    assert settings["partsSizeMultipliers"]["Stars"] == 0.7
    assert settings["showParts"] == {"Stars": True, "Gas": False}
    assert settings["colormapLims"] == {"Stars": {}, "Gas": {"rho": None}}
    assert settings["center"] == [1, 2, 3] and settings["loaded"] is True


def test_group_names_are_checked(tmp_path: Path) -> None:
    group = ParticleGroup("options", ParticleData([]))
    with pytest.raises(FireflyFormatError, match="invalid particle group name"):
        write_dataset(tmp_path / "d", [group])
    twice = [ParticleGroup("A", ParticleData([])), ParticleGroup("A", ParticleData([]))]
    with pytest.raises(FireflyFormatError, match="duplicate"):
        write_dataset(tmp_path / "d", twice)


def test_manifest_paths() -> None:
    assert local_path("mydata/DataGas000.ffly") == "DataGas000.ffly"
    assert local_path("mydata/Gasfftree/octree.json") == "Gasfftree/octree.json"
    assert local_path("plain.ffly") == "plain.ffly"
    with pytest.raises(FireflyFormatError, match="unsafe"):
        local_path("mydata/../../etc/passwd")


def test_manifest_counts_must_match(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [ParticleGroup("A", ParticleData([0.0] * 9))])
    manifest = tmp_path / "d" / "filenames.json"
    raw = json.loads(manifest.read_text())
    raw["A"][0][1] = 4
    manifest.write_text(json.dumps(raw))
    with pytest.raises(FireflyFormatError, match="manifest says 4"):
        read_group(read_dataset(tmp_path / "d"), "A")


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(FireflyFormatError, match="not a Firefly dataset"):
        read_dataset(tmp_path)
    (tmp_path / "filenames.json").write_text("{nope")
    with pytest.raises(FireflyFormatError, match="not valid JSON"):
        read_dataset(tmp_path)


# ---------------------------------------------------------------- firefly compatibility

def test_our_bytes_equal_firefly_binary_writer(tmp_path: Path) -> None:
    """Firefly's own BinaryWriter (unshuffled) writes exactly the bytes we write."""
    np = pytest.importorskip("numpy")
    bw = pytest.importorskip("firefly.data_reader.binary_writer")
    rng = np.random.default_rng(3)
    coords = rng.random((50, 3), dtype=np.float32)
    vel = rng.random((50, 3), dtype=np.float32)
    rgba = rng.random((50, 4), dtype=np.float32)
    temp = rng.random(50, dtype=np.float32)
    writer = bw.BinaryWriter(str(tmp_path / "theirs.ffly"), coords, vel, rgba, shuffle=False)
    writer.nfields, writer.fields, writer.field_names = 1, [temp], ["Temperature"]
    writer.filter_flags, writer.colormap_flags, writer.radius_flags = [True], [True], [False]
    writer.write()
    ours = encode(ParticleData(coords.ravel().tolist(), vel.ravel().tolist(), rgba.ravel().tolist(),
                               {"Temperature": temp.tolist()}, [True], [True], [False]))
    assert ours == (tmp_path / "theirs.ffly").read_bytes()


def test_we_read_firefly_reader_output(firefly_dataset: Path) -> None:
    """A dataset written by firefly.data_reader.Reader reads back with our reader."""
    info = read_dataset(firefly_dataset)
    assert list(info.groups) == ["Halo", "Cloud"]
    assert [n for _p, n in info.groups["Halo"]] == [4000, 4000, 2000]
    halo = read_group(info, "Halo")
    assert halo.npart == 10_000 and halo.velocities is not None
    assert list(halo.fields) == ["Temperature", "Velocity"]  # firefly adds |v| as a field
    assert all(0 <= t <= 1 for t in halo.fields["Temperature"])
    cloud = read_group(info, "Cloud")
    assert cloud.npart == 3000 and cloud.rgba_colors is not None and not cloud.fields
    assert info.settings["partsColors"]["Halo"] == [1.0, 0.2, 0.2, 1.0]
    assert info.settings["partsSizeMultipliers"]["Halo"] == 0.02


def test_we_read_firefly_json_particle_files(firefly_json_dataset: Path) -> None:
    """Firefly's older JSON particle format, as its Reader still writes on request."""
    info = read_dataset(firefly_json_dataset)
    assert [rel for rel, _n in info.groups["Blob"]] == ["DataBlob000.json", "DataBlob001.json"]
    blob = read_group(info, "Blob")
    assert blob.npart == 500 and blob.velocities is None and blob.rgba_colors is None
    assert list(blob.fields) == ["Age"]
    assert (blob.filter_flags, blob.colormap_flags) == ([False], [True])


def test_json_particles_nested_and_octree() -> None:
    nested = particles_from_json({"Coordinates": [[1, 2, 3], [4, 5, 6]], "m": [1, 2],
                                  "radiusKeys": ["m"]}, "x")
    assert list(nested.coordinates) == [1, 2, 3, 4, 5, 6] and nested.radius_flags == [True]
    with pytest.raises(FireflyFormatError, match="octree"):
        particles_from_json({"octree": {}}, "x")
    with pytest.raises(FireflyFormatError, match="not a Firefly particle file"):
        particles_from_json({"m": [1]}, "x")


def test_firefly_settings_class_reads_our_settings(tmp_path: Path) -> None:
    """Firefly's Python Settings loads the settings file our writer produces."""
    settings_mod = pytest.importorskip("firefly.data_reader.settings")
    gas = ParticleData([0.0] * 6, fields={"rho": [1, 2]})
    groups = [ParticleGroup("Gas", gas, color=(0, 1, 0, 1), size=0.4)]
    write_dataset(tmp_path / "d", groups, title="t")
    settings = settings_mod.Settings()
    settings.loadFromJSON(str(tmp_path / "d" / "DataSettings.json"), loud=False)
    assert settings["partsColors"] == {"Gas": [0, 1, 0, 1]}
    assert settings["partsSizeMultipliers"] == {"Gas": 0.4}
    assert settings["title"] == "t"


def test_our_settings_have_every_key_firefly_writes(firefly_dataset: Path, tmp_path: Path) -> None:
    """Same keys, per group and at the top, as a settings file Firefly's Reader wrote."""
    theirs = read_dataset(firefly_dataset).settings
    write_dataset(tmp_path / "d", [ParticleGroup("Halo", ParticleData([0.0] * 3))])
    ours = read_dataset(tmp_path / "d").settings
    assert set(theirs) <= set(ours)
    for key, value in theirs.items():
        if isinstance(value, dict):
            assert set(ours[key]) == {"Halo"}, key
