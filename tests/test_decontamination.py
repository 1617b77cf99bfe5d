"""``data.decontaminate`` (drop | refuse | off) end to end on fixture data, and the retired
``data.allow_contamination`` key.

The fixture data folder is ``tests/fixtures/release`` (ARC-Challenge train/test) plus a SciQ train file
whose second question is ARC-Challenge test's FIX_R_6 up to case, punctuation and spacing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose, run_config

from arc_lab.config import ConfigError
from arc_lab.data.builders import ContaminationError
from arc_lab.objectives.base import InputKind

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

LEAK = {
    "question": "why does a METAL spoon in hot soup feel warm",
    "distractor1": "a",
    "distractor2": "b",
    "distractor3": "c",
    "correct_answer": "d",
    "support": "",
}


@pytest.fixture()
def leaky_data(tmp_path) -> Path:
    """ARC-Challenge train/test from the release fixtures + SciQ train with one ARC-C test question."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURES / "release" / "arc_challenge", root / "arc_challenge")
    (root / "sciq").mkdir()
    lines = (FIXTURES / "hub" / "sciq" / "train.jsonl").read_text().splitlines()
    lines.insert(1, json.dumps(LEAK))
    (root / "sciq" / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


def data_cfg(data_dir: Path, *overrides: str):
    return run_config([f"data.data_dir={data_dir}", "data.train_sources=[arc_challenge,sciq]", *overrides])


def build(run):
    from arc_lab.run.build import training_examples

    return training_examples(run, InputKind.PAIR, None)


def test_default_mode_is_drop(hydra_ctx, leaky_data):
    assert compose().data.decontaminate == "drop"


def test_drop_removes_the_offender_and_records_its_id(hydra_ctx, leaky_data):
    pairs, info = build(data_cfg(leaky_data))
    # 4 ARC-C train + 3 clean SciQ questions stay; the leaked one is sciq-train-1 (row 1)
    assert info["questions"] == 7
    assert info["decontamination"]["removed"] == 1
    assert info["decontamination"]["removed_ids"] == ["sciq/train/sciq-train-1"]
    assert info["decontamination"]["evaluation_questions"] == 2
    assert not any("spoon" in p.prompt.lower() for p in pairs)


def test_refuse_fails_naming_the_offender(hydra_ctx, leaky_data):
    with pytest.raises(ContaminationError, match=r"sciq-train-1 \(sciq/train\) = FIX_R_6"):
        build(data_cfg(leaky_data, "data.decontaminate=refuse"))
    pairs, info = build(
        data_cfg(FIXTURES / "release", "data.train_sources=[arc_challenge]", "data.decontaminate=refuse")
    )
    assert info["decontamination"]["removed"] == 0 and info["questions"] == 4


def test_off_keeps_everything_without_reading_the_test_split(hydra_ctx, leaky_data):
    (leaky_data / "arc_challenge" / "test.jsonl").unlink()  # off must not need it
    pairs, info = build(data_cfg(leaky_data, "data.decontaminate=off"))
    assert info["questions"] == 8 and info["decontamination"]["removed"] == 0
    assert info["decontamination"]["evaluation_questions"] == 0
    assert any("spoon" in p.prompt.lower() for p in pairs)


def test_mode_is_part_of_the_stage_hash(hydra_ctx, leaky_data):
    from arc_lab.run.build import stage_inputs
    from arc_lab.run.plan import stage_hash

    drop, off = data_cfg(leaky_data), data_cfg(leaky_data, "data.decontaminate=off")
    assert stage_hash(drop, "base:x", stage_inputs(drop)) != stage_hash(off, "base:x", stage_inputs(off))


#: an OpenBookQA test question (tests/fixtures/hub/openbookqa) as a SciQ training row, up to case and spacing
OBQA_LEAK = {**LEAK, "question": "to keep a drink  COLD for longer, you could"}


@pytest.fixture()
def obqa_leak(leaky_data) -> Path:
    """``leaky_data`` plus OpenBookQA test, whose one question is also SciQ train's last row."""
    shutil.copytree(FIXTURES / "hub" / "openbookqa", leaky_data / "openbookqa")
    train = leaky_data / "sciq" / "train.jsonl"
    train.write_text(train.read_text() + json.dumps(OBQA_LEAK) + "\n")
    return leaky_data


def test_every_eval_task_that_asks_is_checked_not_only_arc_challenge(hydra_ctx, obqa_leak):
    """A run that evaluates OpenBookQA is checked against OpenBookQA test too (its registry entry says
    decontaminate); one that does not evaluate it is not, and keeps the stage key it always had. Generated
    eval tasks (builtin) add nothing: their questions are disjoint from every training set by construction."""
    from arc_lab.run.build import stage_inputs

    arc_only = data_cfg(obqa_leak, "eval.tasks=[arc_challenge,builtin]")
    _, info = build(arc_only)
    d = info["decontamination"]
    assert d["against"] == ["arc_challenge/test"] and d["removed_ids"] == ["sciq/train/sciq-train-1"]
    assert sorted(stage_inputs(arc_only)) == [
        "arc_challenge/train",
        "decontamination/arc_challenge/test",
        "sciq/train",
    ]

    both = data_cfg(obqa_leak, "eval.tasks=[arc_challenge,openbookqa]")
    pairs, info = build(both)
    d = info["decontamination"]
    assert d["against"] == ["arc_challenge/test", "openbookqa/test"]
    assert d["per_set"] == {
        "arc_challenge/test": {"questions": 2, "removed": 1},
        "openbookqa/test": {"questions": 1, "removed": 1},
    }
    assert d["removed"] == 2 and d["removed_by_source"] == {"sciq": 2} and d["evaluation_questions"] == 3
    assert d["removed_ids"] == ["sciq/train/sciq-train-1", "sciq/train/sciq-train-4"]
    assert not any("drink" in p.prompt.lower() for p in pairs)
    keys = stage_inputs(both)
    assert "decontamination/openbookqa/test" in keys
    assert {k: v for k, v in keys.items() if "openbookqa" not in k} == stage_inputs(arc_only)
    with pytest.raises(ContaminationError, match=r"sciq-train-4 \(sciq/train\) = fix-obqa-h1"):
        build(data_cfg(obqa_leak, "eval.tasks=[openbookqa]", "data.decontaminate=refuse"))


def test_an_eval_task_that_asks_for_the_check_must_be_readable(hydra_ctx, leaky_data):
    """The run is about to evaluate it: a missing scored split fails before any training, naming it."""
    from arc_lab.data.loaders import DataSourceError

    with pytest.raises(DataSourceError, match=r"openbookqa/test: no file test.jsonl"):
        build(data_cfg(leaky_data, "eval.tasks=[openbookqa]"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.decontaminate=allow", "data.decontaminate='allow': expected one of ['drop', 'refuse', 'off']"),
        ("data.allow_contamination=true", "was replaced by data.decontaminate: use data.decontaminate=off"),
        ("data.allow_contamination=false", "was replaced by data.decontaminate"),
    ],
)
def test_bad_or_retired_keys_fail_naming_the_key(hydra_ctx, override, message):
    with pytest.raises(ConfigError) as e:
        run_config([override])
    assert message in str(e.value)


@pytest.mark.slow
def test_drop_end_to_end_lists_the_ids_in_the_run_folder(leaky_data, tmp_path):
    """A 1-step DPO run on a tiny model: the log says how many were removed, data.json lists them."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "arc_lab",
            "model=tiny_llama",
            "stage=dpo_cpu",
            "stage.optim.max_steps=1",
            "eval.before=false",
            "eval.limit=2",
            f"data.data_dir={leaky_data}",
            "data.train_sources=[arc_challenge,sciq]",
            f"output_root={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "removed 1 training question(s)" in out.stdout + out.stderr
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["dpo"]["decontamination"]["removed_ids"] == ["sciq/train/sciq-train-1"]


@pytest.mark.slow
def test_cli_retired_key_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "arc_lab", "data.allow_contamination=true", f"output_root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.decontaminate=off" in lines[0], out.stderr
