"""Loggers: the local metrics.jsonl, config flattening, run ids, fan-out and the factory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from omegaconf import OmegaConf

from arc_lab.train.loggers import (
    JsonlLogger,
    Logger,
    MultiLogger,
    NullLogger,
    config_run_id,
    flatten_config,
    make_logger,
    read_metrics,
)


def test_jsonl_one_flushed_line_per_call(tmp_path):
    lg = JsonlLogger(tmp_path)
    lg.log({"train/loss": torch.tensor(0.5), "train/lr": 1e-5}, step=1)
    # flushed: readable before finish()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["step"] == 1 and rec["train/loss"] == 0.5 and rec["train/lr"] == 1e-5
    assert isinstance(rec["time"], float)
    lg.log({"train/loss": float("nan")}, step=2)
    lg.log_summary({"eval/acc": 0.25, "note": "done"})
    lg.finish()
    lg.finish()  # idempotent
    rows, summary = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["train/loss"] is None  # strict JSON: non-finite numbers become null (runinfo.json_safe)
    assert summary == {"eval/acc": 0.25, "note": "done"}
    with pytest.raises(RuntimeError, match="finished"):
        lg.log({"x": 1.0}, step=3)


def test_jsonl_append_on_resume_last_line_wins(tmp_path):
    with JsonlLogger(tmp_path) as lg:
        lg.log({"loss": 1.0}, step=1)
        lg.log({"loss": 0.9}, step=2)
    with JsonlLogger(tmp_path) as lg:  # resumed from the step-1 checkpoint
        lg.log({"loss": 0.8}, step=2)
    rows, _ = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.8)]


def test_jsonl_rejects_reserved_and_non_numeric(tmp_path):
    lg = JsonlLogger(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        lg.log({"time": 1.0}, step=1)
    with pytest.raises(ValueError, match="step=2"):
        lg.log({"step": 2, "loss": 1.0}, step=1)
    lg.log({"step": 1, "loss": 1.0}, step=1)  # the loop's records carry their step
    assert read_metrics(tmp_path / "metrics.jsonl")[0][0]["loss"] == 1.0
    with pytest.raises(TypeError, match="'acc'"):
        lg.log({"acc": "high"}, step=1)
    with pytest.raises(TypeError):
        lg.log({"vec": torch.ones(3)}, step=1)
    lg.finish()


@dataclass
class _Optim:
    lr: float = 5e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class _Stage:
    name: str = "dpo"
    optim: _Optim = field(default_factory=_Optim)
    deepspeed: dict | None = None


def test_flatten_config_dict_omegaconf_dataclass():
    nested = {"stage": {"optim": {"lr": 1e-4, "betas": [0.9, 0.95]}, "lora": {}}, "objective": {"beta": 0.1}}
    flat = {"stage.optim.lr": 1e-4, "stage.optim.betas": [0.9, 0.95], "stage.lora": {}, "objective.beta": 0.1}
    assert flatten_config(nested) == flat
    assert flatten_config(OmegaConf.create(nested)) == flat
    cfg = OmegaConf.create({"a": 2, "b": "${a}"})
    assert flatten_config(cfg) == {"a": 2, "b": 2}  # resolved
    assert flatten_config({"stage": _Stage()}) == {
        "stage.name": "dpo",
        "stage.optim.lr": 5e-6,
        "stage.optim.betas": [0.9, 0.999],
        "stage.deepspeed": None,
    }
    with pytest.raises(TypeError):
        flatten_config([1, 2])


def test_config_run_id_is_deterministic_and_sensitive():
    a = {"stage": {"optim": {"lr": 1e-4}}, "objective": {"beta": 0.1}}
    b = {"objective": {"beta": 0.1}, "stage": {"optim": {"lr": 1e-4}}}
    assert config_run_id(a) == config_run_id(b) == config_run_id(OmegaConf.create(a))
    assert config_run_id(a) != config_run_id({**a, "objective": {"beta": 0.2}})
    rid = config_run_id(a, prefix="dpo-")
    assert rid.startswith("dpo-") and len(rid) == 4 + 16
    with pytest.raises(ValueError, match="prefix"):
        config_run_id(a, prefix="a/b")


class _Recorder(Logger):
    def __init__(self, fail_finish=False):
        self.calls, self.fail_finish = [], fail_finish

    def log(self, metrics, step):
        self.calls.append(("log", dict(metrics), step))

    def log_summary(self, metrics):
        self.calls.append(("summary", dict(metrics)))

    def finish(self):
        self.calls.append(("finish",))
        if self.fail_finish:
            raise OSError("disk full")


def test_multilogger_fans_out_and_finishes_all():
    a, b = _Recorder(fail_finish=True), _Recorder()
    m = MultiLogger([a, b])
    m.log({"x": 1.0}, step=3)
    m.log_summary({"y": 2.0})
    with pytest.raises(OSError, match="disk full"):
        m.finish()
    expected = [("log", {"x": 1.0}, 3), ("summary", {"y": 2.0}), ("finish",)]
    assert a.calls == expected and b.calls == expected


def test_make_logger_disabled_and_ranks(tmp_path):
    lg = make_logger("disabled", "p", None, None, None, None, {"a": 1}, tmp_path / "run")
    assert isinstance(lg, JsonlLogger)
    lg.log({"x": 1.0}, 0)
    lg.finish()
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert not (tmp_path / "run" / "wandb").exists()
    other = make_logger("offline", "p", None, None, None, None, {}, tmp_path / "rank1", rank=1)
    assert isinstance(other, NullLogger) and not (tmp_path / "rank1").exists()
    with pytest.raises(ValueError, match="logger.wandb"):
        make_logger("cloud", "p", None, None, None, None, {}, tmp_path)
