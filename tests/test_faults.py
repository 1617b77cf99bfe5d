"""Faults that must never give wrong numbers or a raw traceback (issue 10): NaN/collapsed models, full disks,
bad data bytes. Tiny random models throughout; a full disk is simulated by making the write raise
``OSError(ENOSPC)`` (no disk is filled). Each test is one row of issue 10's fault matrix.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose, tiny_model

from arc_lab.config import OptimConfig
from arc_lab.data.builtin import builtin_items
from arc_lab.eval import run_eval
from arc_lab.eval.metrics import NonFiniteLogLikelihood
from arc_lab.objectives.clm import CLMLoss
from arc_lab.run.runinfo import DiskFull
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.checkpoint import list_checkpoints
from arc_lab.train.loop import train


def enospc() -> OSError:
    """A fresh out-of-space error (a shared instance would carry the file name set by an earlier test)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _builtin_task():
    return {"builtin": (builtin_items("test")[:3], builtin_items("train"))}


# ------------------------------------------------------------------------------------------- evaluation
def test_eval_refuses_nan_loglikelihoods_naming_task_item_and_choice(smol_tokenizer, tmp_path):
    model = tiny_model("tiny_llama", smol_tokenizer)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))  # every logit NaN: argmax would pick choice 0
    with pytest.raises(NonFiniteLogLikelihood) as err:
        run_eval(
            "ours",
            model,
            smol_tokenizer,
            tasks=["builtin"],
            num_fewshot=0,
            task_items=_builtin_task(),
            out_dir=tmp_path / "eval",
            progress=False,
        )
    first = builtin_items("test")[0]
    assert str(err.value).startswith(
        f"eval builtin: item {first.id!r} (doc 0) choice 0 ({first.choices[0]!r}) has log-likelihood nan"
    )
    assert not (tmp_path / "eval").exists()  # nothing was scored or written


def test_eval_disk_full_names_the_file_and_what_was_kept(smol_tokenizer, tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFull) as err:
        run_eval(
            "ours",
            tiny_model("tiny_llama", smol_tokenizer),
            smol_tokenizer,
            tasks=["builtin"],
            num_fewshot=0,
            task_items=_builtin_task(),
            out_dir=tmp_path / "eval",
            progress=False,
        )
    assert str(err.value) == (
        f"no space left on device while writing {tmp_path / 'eval' / 'metrics.json'}. Kept: this evaluation's "
        f"metrics and samples were not saved (not cached). Free space and rerun."
    )


# ------------------------------------------------------------------------------------------ checkpoints
def test_disk_full_while_checkpointing_keeps_the_last_checkpoint_and_resumes_bitwise(
    smol_tokenizer, blocks, tmp_path, monkeypatch
):
    optim = OptimConfig(
        lr=3e-3,
        max_steps=6,
        batch_size=4,
        warmup_ratio=0.0,
        save_every=2,
        log_every=1,
        scheduler="cosine",
        precision="fp32",
    )

    def run(out_dir):
        return train(
            tiny_model("tiny_llama", smol_tokenizer),
            smol_tokenizer,
            CLMLoss(),
            blocks,
            StageArgs(optim=optim, lora=None, seq_len=32),
            out_dir=out_dir,
            runtime=Runtime(progress=False),
        )

    reference = run(tmp_path / "uninterrupted")
    real_save, calls = torch.save, []

    def save_until_full(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 4:  # the step-2 checkpoint's 4 files fit; step 4's first file does not
            raise enospc()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    out = tmp_path / "full"
    with pytest.raises(DiskFull) as err:
        run(out)
    monkeypatch.undo()
    kept = out / "checkpoints" / "step-000002"
    msg = str(err.value)
    assert msg.startswith(f"no space left on device while writing {out / 'checkpoints'}/.tmp-step-000004-")
    assert msg.endswith(
        f"/trainable.pt. Kept: the last good checkpoint {kept} (a rerun of the same command resumes from "
        f"it). Free space and rerun."
    )
    assert list_checkpoints(out) == [kept] and not list((out / "checkpoints").glob(".tmp-*"))
    resumed = run(out)
    assert resumed.resumed_from == 2
    for (name, a), b in zip(
        reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------ the stage pipeline
SFT_1STEP = [
    "model=tiny_llama",
    "stage=sft_cpu",
    "objective=sft",
    "stage.optim.max_steps=1",
    "data.max_items_per_source=8",
    "eval.limit=3",
    "eval.before=false",
]


def run_app(root: Path, *overrides: str) -> Path:
    """Run the pipeline in-process; return the (only) stage directory."""
    from arc_lab.run.pipeline import run_pipeline
    from arc_lab.run.plan import plan_chain

    cfg = compose([*SFT_1STEP, *overrides, f"output_root={root}"])
    run_pipeline(plan_chain(cfg), root / "run")
    (stage,) = (root / "stages").iterdir()
    return stage


@pytest.mark.slow
def test_disk_full_while_saving_the_stage_model_keeps_the_checkpoints(hydra_ctx, tmp_path, monkeypatch):
    import transformers.modeling_utils as mu

    def full(*args, **kwargs):
        raise enospc()

    monkeypatch.setattr(mu, "safe_save_file", full)
    with pytest.raises(DiskFull) as err:
        run_app(tmp_path)
    monkeypatch.undo()
    (stage,) = (tmp_path / "stages").iterdir()
    checkpoints = stage / "train" / "checkpoints"
    assert str(err.value) == (
        f"no space left on device while writing {stage / 'model'}. Kept: the training checkpoints in "
        f"{checkpoints} (a rerun only merges). Free space and rerun."
    )
    assert [p.name for p in list_checkpoints(stage / "train")] == ["step-000001"]
    assert not (stage / "DONE").exists() and not (stage / "model").exists()
    assert not [p for p in stage.iterdir() if p.name.startswith(".tmp")]
    run_app(tmp_path)  # the rerun resumes at the last step and only merges
    assert (stage / "DONE").is_file()
    assert json.loads((stage / "train.json").read_text())["resumed_from"] == 1


@pytest.mark.slow
def test_nan_loglikelihoods_after_a_stage_unmark_it(hydra_ctx, tmp_path, monkeypatch):
    """A model the training-time checks let through but that scores NaN is no finished stage."""
    import arc_lab.eval.ours as ours

    real = ours.score_questions

    def nan_scores(*args, **kwargs):
        out = real(*args, **kwargs)
        out[0].loglikelihoods[1] = float("nan")
        return out

    monkeypatch.setattr(ours, "score_questions", nan_scores)
    with pytest.raises(NonFiniteLogLikelihood) as err:
        run_app(tmp_path)
    (stage,) = (tmp_path / "stages").iterdir()
    assert "(doc 0) choice 1" in str(err.value) and str(err.value).endswith(
        f"Stage sft ({stage}) is no longer marked DONE"
    )
    assert not (stage / "DONE").exists()
    assert not list((tmp_path / "evals").glob("*/metrics.json"))  # nothing cached


# ---------------------------------------------------------------------------------------- command line
def run_cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "arc_lab",
            "model=tiny_llama",
            f"output_root={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("arc_lab:")]


@pytest.mark.slow
def test_cli_collapsed_stage_fails_in_one_line_and_is_not_done(tmp_path):
    out = run_cli(
        tmp_path,
        "stage=sft_cpu",
        "objective=sft",
        "stage.optim.lr=1e6",
        "stage.optim.max_steps=6",
        "data.max_items_per_source=8",
        "eval.before=false",
        "eval.limit=3",
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    (line,) = _error_lines(out.stderr)
    assert line.startswith(
        "arc_lab: ModelCollapsed: training collapsed: after step 6 the model gives the same next-token"
    )
    (stage,) = (tmp_path / "out" / "stages").iterdir()
    assert not (stage / "DONE").exists() and not (stage / "model").exists()
    assert not (tmp_path / "out" / "evals").exists()


@pytest.mark.slow
def test_cli_non_utf8_data_fails_in_one_line(tmp_path):
    data = tmp_path / "data" / "arc_easy"
    data.mkdir(parents=True)
    row = json.dumps(
        {
            "id": "e1",
            "question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}]},
            "answerKey": "A",
        }
    ).encode()
    (data / "train.jsonl").write_bytes(row + b"\n")
    (data / "test.jsonl").write_bytes(row + b"\n" + row.replace(b"Q?", b"Q\xe9?") + b"\n")  # latin-1 'é'
    args = ["stage=eval", "eval.tasks=[arc_easy]", f"data.data_dir={tmp_path / 'data'}"]
    out = run_cli(tmp_path, *args)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    offset = len(row) + 1 + row.index(b"Q?") + 1
    assert _error_lines(out.stderr) == [
        f"arc_lab: DataError: arc_easy/test.jsonl line 2: not UTF-8: byte b'\\xe9' at byte offset {offset} of the file "
        f"(byte {row.index(b'Q?') + 2} of the line) is invalid continuation byte; re-save the file as UTF-8"
    ]
    full = run_cli(tmp_path, *args, env={"HYDRA_FULL_ERROR": "1"})  # the traceback on request
    assert full.returncode == 1 and "Traceback" in full.stderr and "DataError" in full.stderr


def test_merge_refuses_weights_that_overflow_its_dtype(smol_tokenizer, tmp_path):
    from arc_lab.train.health import TrainingDiverged
    from arc_lab.train.merge import merge

    model = tiny_model("tiny_llama", smol_tokenizer)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = 1e6  # finite in float32; float16 tops out at 65504
    with pytest.raises(
        TrainingDiverged, match=r"merging to float16: parameters \['model.layers.0.mlp.down_proj"
    ):
        merge(model, smol_tokenizer, tmp_path / "model", dtype="float16")
    assert list(tmp_path.iterdir()) == []


def test_a_merge_killed_midway_leaves_nothing_after_the_next_merge(smol_tokenizer, tmp_path, caplog):
    from arc_lab.train.merge import merge

    stale = tmp_path / ".tmp-model-k1ll3d"  # what a kill during save_pretrained leaves behind
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1024)
    other = tmp_path / ".tmp-checkpoint-x"  # not a merge's: left alone
    other.mkdir()
    with caplog.at_level("INFO", logger="arc_lab.train.merge"):
        merge(tiny_model("tiny_llama", smol_tokenizer), smol_tokenizer, tmp_path / "model")
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-checkpoint-x", "model"]
    assert any(
        "left by a merge that was killed" in r.message and str(stale) in r.message for r in caplog.records
    )
