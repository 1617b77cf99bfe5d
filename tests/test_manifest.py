"""arc_lab.run.manifest: directory manifests name every kind of damage, and the digest memo never hides a change."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from arc_lab.run import manifest


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(manifest, "_memo", {})
    monkeypatch.setattr(manifest, "_memo_file", None)
    monkeypatch.setattr(manifest, "_memo_dirty", False)


@pytest.fixture
def entry(tmp_path):
    d = tmp_path / "entry"
    (d / "model").mkdir(parents=True)
    (d / "model" / "weights.bin").write_bytes(bytes(range(256)) * 8)
    (d / "train.json").write_text('{"steps": 3}\n')
    (d / ".lock").write_text("")  # hidden files (locks, temporaries) are not part of an entry
    manifest.write_manifest(d, ["model", "train.json"])
    return d


def test_an_intact_directory_has_no_problems(entry):
    m = json.loads((entry / manifest.MANIFEST).read_text())
    assert set(m["files"]) == {"model/weights.bin", "train.json"}
    assert m["files"]["train.json"]["sha256"] == hashlib.sha256(b'{"steps": 3}\n').hexdigest()
    assert manifest.check_manifest(entry) == []


@pytest.mark.parametrize(
    "damage,expected",
    [
        (lambda d: (d / "model" / "weights.bin").unlink(), "model/weights.bin: missing"),
        (
            lambda d: (d / "model" / "weights.bin").write_bytes(b"\0" * 100),
            "model/weights.bin: 100 bytes, the manifest says 2048",
        ),
        (lambda d: (d / "train.json").write_text('{"steps": 4}\n'), "train.json: content differs"),
        (lambda d: (d / "model" / "extra.bin").write_bytes(b"x"), "model/extra.bin: not in the manifest"),
        (lambda d: (d / manifest.MANIFEST).write_text('{"files": '), "MANIFEST.json is unreadable"),
        (lambda d: (d / manifest.MANIFEST).unlink(), "no MANIFEST.json"),
    ],
    ids=["deleted", "truncated", "same_size_other_bytes", "extra_file", "manifest_truncated", "no_manifest"],
)
def test_every_kind_of_damage_is_named(entry, damage, expected):
    damage(entry)
    problems = manifest.check_manifest(entry)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_file_changed_right_after_hashing_is_never_memoised(tmp_path):
    """Coarse file-system clocks could give a second write the first one's timestamps: a file written
    within RACY_S seconds of being hashed is hashed again next time."""
    f = tmp_path / "data.jsonl"
    f.write_text("a\n")
    manifest.file_digest(f)
    assert str(f.resolve()) not in manifest._memo


def test_the_memo_is_keyed_by_ctime_so_a_restored_mtime_cannot_hide_an_edit(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "RACY_S", -1.0)  # memoise at once (the clock-tick guard is tested above)
    f = tmp_path / "test.jsonl"
    f.write_text('{"answerKey": "A"}\n')
    first = manifest.file_digest(f)
    assert str(f.resolve()) in manifest._memo
    st = f.stat()
    f.write_text('{"answerKey": "B"}\n')  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    assert manifest.file_digest(f) == hashlib.sha256(b'{"answerKey": "B"}\n').hexdigest() != first


def test_an_unchanged_file_is_not_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "RACY_S", -1.0)
    f = tmp_path / "weights.bin"
    f.write_bytes(b"w" * 1000)
    digest = manifest.file_digest(f)

    def no_reading(*a, **k):
        raise AssertionError("hashed again")

    monkeypatch.setattr(manifest.hashlib, "sha256", no_reading)
    assert manifest.file_digest(f) == digest


def test_the_memo_persists_and_forgets_deleted_files(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "RACY_S", -1.0)
    memo = tmp_path / "memo.json"
    manifest.use_memo(memo)
    kept, gone = tmp_path / "kept.bin", tmp_path / "gone.bin"
    kept.write_bytes(b"k")
    gone.write_bytes(b"g")
    manifest.file_digest(kept)
    manifest.file_digest(gone)
    gone.unlink()
    manifest.save_memo()
    assert set(json.loads(memo.read_text())) == {str(kept.resolve())}
    monkeypatch.setattr(manifest, "_memo", {})
    manifest.use_memo(memo)  # a later process
    assert manifest._memo[str(kept.resolve())][4] == hashlib.sha256(b"k").hexdigest()
    memo.write_text("{not json")
    monkeypatch.setattr(manifest, "_memo", {})
    manifest.use_memo(memo)  # an unreadable memo is ignored, not trusted in part
    assert manifest._memo == {}
