"""W&B offline: a real offline run written by WandbLogger, read back by arc_lab.analysis.wandb_offline."""

from __future__ import annotations

import os
import struct
import time
import zlib

import pytest

from arc_lab.analysis.wandb_offline import (
    BLOCK_SIZE,
    OfflineRunError,
    find_offline_runs,
    iter_record_bytes,
    read_offline_run,
)
from arc_lab.train.loggers import WANDB_DIR_VARS, MultiLogger, config_run_id, make_logger, read_metrics

CONFIG = {
    "stage": {"name": "dpo", "optim": {"lr": 5e-6, "batch_size": 8}, "lora": {"r": 64}},
    "objective": {"name": "dpo", "beta": 0.1},
    "seed": 0,
}


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """Point HOME and every WANDB_* directory at tmp so nothing can land in the real home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in WANDB_DIR_VARS:
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_MODE", "WANDB_RUN_ID", "WANDB_RUN_GROUP", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def _read_when_complete(path, timeout: float = 30.0):
    """Read the run once its exit record is on disk: under heavy CPU load the file was once read right after
    finish() with no run record yet (an empty run_id), so wait for wandb-core's last write."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_offline_run(path)
        if run.exit_code is not None and run.run_id or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


@pytest.mark.slow
def test_offline_run_roundtrip(tmp_path, isolated_home):
    run_dir = tmp_path / "run"
    run_id = config_run_id(CONFIG, prefix="t-")
    big = "x" * 70_000  # > 2 blocks: exercises FIRST/MIDDLE/LAST fragments
    lg = make_logger(
        "offline",
        "arc_lab_test",
        None,
        "sweep-7",
        "dpo-beta0.1",
        run_id,
        {**CONFIG, "notes": {"big": big}},
        run_dir,
    )
    assert isinstance(lg, MultiLogger)
    assert os.environ["WANDB_DIR"] == str(run_dir)
    losses = [0.6931, 0.65, 0.5, 0.25]
    for step, loss in enumerate(losses, start=1):
        lg.log({"train/loss": loss, "train/lr": 1e-6 * step}, step=step)
    lg.log_summary({"eval/acc": 0.375, "eval/acc_norm": 0.5})
    lg.finish()

    for var in WANDB_DIR_VARS:  # restored after finish
        assert var not in os.environ
    assert list(isolated_home.iterdir()) == []  # nothing written outside the run folder
    files = find_offline_runs(run_dir)
    assert len(files) == 1 and files[0].name == f"run-{run_id}.wandb"

    run = _read_when_complete(files[0].parent)
    assert (run.run_id, run.project, run.group, run.name) == (
        run_id,
        "arc_lab_test",
        "sweep-7",
        "dpo-beta0.1",
    )
    assert run.exit_code == 0 and not run.truncated
    assert run.config == {
        "stage.name": "dpo",
        "stage.optim.lr": 5e-6,
        "stage.optim.batch_size": 8,
        "stage.lora.r": 64,
        "objective.name": "dpo",
        "objective.beta": 0.1,
        "seed": 0,
        "notes.big": big,
    }
    assert [r["_step"] for r in run.history] == [1, 2, 3, 4]
    assert [r["train/loss"] for r in run.history] == losses
    assert [r["train/lr"] for r in run.history] == [1e-6 * s for s in range(1, 5)]
    assert run.summary["eval/acc"] == 0.375 and run.summary["eval/acc_norm"] == 0.5
    assert run.summary["train/loss"] == 0.25 and run.summary["_step"] == 4

    rows, summary = read_metrics(run_dir / "metrics.jsonl")  # the local log has the same numbers
    assert [r["train/loss"] for r in rows] == losses
    assert summary == {"eval/acc": 0.375, "eval/acc_norm": 0.5}


@pytest.mark.slow
def test_disabled_mode_writes_nothing(tmp_path, isolated_home):
    from arc_lab.train.loggers import WandbLogger

    lg = WandbLogger(
        mode="disabled",
        project="p",
        entity=None,
        group="g",
        name="n",
        run_id="abc",
        config=CONFIG,
        run_dir=tmp_path / "run",
    )
    lg.log({"loss": 1.0}, step=1)
    lg.log_summary({"acc": 1.0})
    lg.finish()
    assert list((tmp_path / "run").iterdir()) == []
    assert list(isolated_home.iterdir()) == []


# ------------------------------------------------------------------ the reader on hand-made files
def _fragment(rtype: int, chunk: bytes) -> bytes:
    crc = zlib.crc32(chunk, zlib.crc32(bytes([rtype])))
    return struct.pack("<IHB", crc, len(chunk), rtype) + chunk


def _write_log(path, payloads: list[bytes]) -> None:
    """A minimal writer of the format (header + 32 KiB blocks + fragments), as wandb-core writes it."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        rest, first = payload, True
        while True:
            left = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if left < 7:
                out += b"\0" * left
                continue
            chunk, rest = rest[: left - 7], rest[left - 7 :]
            last = not rest
            rtype = (1 if last else 2) if first else (4 if last else 3)
            out += _fragment(rtype, chunk)
            first = False
            if last:
                break
    path.write_bytes(bytes(out))


def test_reader_reassembles_fragments_and_padding(tmp_path):
    payloads = [b"a" * 10, b"b" * (BLOCK_SIZE * 2 + 5), b"c" * (BLOCK_SIZE - 7 - 7 - 10 - 7 - 3), b"d"]
    path = tmp_path / "run-x.wandb"
    _write_log(path, payloads)
    assert list(iter_record_bytes(path)) == payloads


def test_reader_reports_corruption_and_truncation(tmp_path):
    from wandb.proto import wandb_internal_pb2 as pb

    recs = []
    for step in range(3):
        r = pb.Record()
        item = r.history.item.add()
        item.key, item.value_json = "loss", str(1.0 / (step + 1))
        recs.append(r.SerializeToString())
    path = tmp_path / "run-x.wandb"
    _write_log(path, recs)
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # killed mid-write
    run = read_offline_run(path)
    assert run.truncated and [h["loss"] for h in run.history] == [1.0, 0.5]

    bad = bytearray(data)
    bad[20] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(OfflineRunError, match="checksum"):
        read_offline_run(path)
    path.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(OfflineRunError, match="not a W&B run file"):
        read_offline_run(path)
    (tmp_path / "run-y.wandb").write_bytes(data)
    with pytest.raises(OfflineRunError, match="expected one"):
        read_offline_run(tmp_path)  # a directory with two candidates is ambiguous
    (tmp_path / "run-x.wandb").unlink()
    (tmp_path / "run-y.wandb").unlink()
    with pytest.raises(OfflineRunError, match="expected one"):
        read_offline_run(tmp_path)
