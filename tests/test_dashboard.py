"""``python -m arc_lab.dashboard``: the workspace is built offline (never saved) from a real offline run of the
pipeline, and every key of every panel is a key that run's W&B logger wrote, read back from its run file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arc_lab.analysis.dashboard import DashboardError, LoggedKeys, build_report, main, plan_dashboard, to_json
from arc_lab.analysis.wandb_offline import find_offline_runs, read_offline_run

GROUP = "wb_dash"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One cell CPT(2 steps) -> KTO(2 steps) -> eval, logged with ``logger=wandb_offline``."""
    tmp = tmp_path_factory.mktemp("dashboard")
    state = tmp / "wandb_env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(state),
        WANDB_CONFIG_DIR=str(state / "config"),
        WANDB_CACHE_DIR=str(state / "cache"),
        WANDB_DATA_DIR=str(state / "data"),
    )
    args = [
        sys.executable,
        "-m",
        "arc_lab",
        "model=tiny_llama",
        "stage=dpo_cpu",
        "objective=kto",
        "stage.init=cpt_cpu",
        "stage.optim.max_steps=2",
        "stage.optim.log_every=1",
        "stage.init_overrides=['stage.optim.max_steps=2','stage.optim.log_every=1']",
        "data.max_items_per_source=8",
        "eval.limit=4",
        "eval.before=false",
        f"name={GROUP}",
        "logger=wandb_offline",
        f"output_root={tmp / 'out'}",
    ]
    out = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return tmp / "out"


def logged(run_dir: Path):
    """The run as its W&B run file recorded it: (config keys, summary keys, history keys, group)."""
    (path,) = find_offline_runs(run_dir)
    run = read_offline_run(path)
    history = {k for row in run.history for k in row}
    return set(run.config), set(run.summary), history, run.group


def panel_keys(panel: dict) -> list[tuple[str, str]]:
    """(where, key) of every metric a serialised panel reads: 'summary', 'config' or 'history'."""
    view, cfg = panel["viewType"], panel["config"]
    if view == "Scatter Plot":
        accessors = [cfg["xAxis"], cfg["yAxis"]]
    elif view == "Parallel Coordinates Plot":
        accessors = [c["accessor"] for c in cfg["columns"]]
    elif view == "Run History Line Plot":
        assert cfg["xAxis"] == "_step"  # W&B's step: every stage of the chain at increasing steps
        return [("history", m) for m in cfg["metrics"]]
    else:
        raise AssertionError(f"unexpected panel type {view}")
    out = []
    for a in accessors:
        section, key = a.split(":", 1)
        if section == "config":  # arc_lab's config is flat: W&B stores {"objective.beta": {"value": ...}}
            assert key.endswith(".value"), a
            key = key.removesuffix(".value")
        out.append((section, key))
    return out


@pytest.mark.slow
def test_every_panel_key_is_a_logged_key(run_dir, capsys):
    config, summary, history, group = logged(run_dir)
    assert group == GROUP
    assert (
        main(["--entity", "e", "--project", "arc_lab", "--group", GROUP, "--runs", str(run_dir), "--dry-run"])
        == 0
    )
    spec = json.loads(capsys.readouterr().out)["workspace"]
    assert (spec["entity"], spec["project"], spec["displayName"]) == ("e", "arc_lab", f"arc_lab {GROUP}")
    section = spec["spec"]["section"]
    sections = section["panelBankConfig"]["sections"]
    keys = [k for s in sections for p in s["panels"] for k in panel_keys(p)]
    available = {"summary": summary, "config": config, "history": history}
    missing = [(where, k) for where, k in keys if k not in available[where]]
    assert not missing, f"panel keys the W&B logger did not write: {missing}"
    # the panels the issue asks for, on this run's task and stages
    views = [(s["name"], p["viewType"]) for s in sections for p in s["panels"]]
    assert ("acc vs acc_norm", "Scatter Plot") in views and (
        "acc vs acc_norm",
        "Parallel Coordinates Plot",
    ) in views
    assert set(keys) >= {
        ("summary", "eval/builtin/acc"),
        ("summary", "eval/builtin/acc_norm"),
        ("config", "objective.name"),
        ("config", "objective.beta"),
        ("config", "stage.optim.lr"),
        ("history", "cpt/loss"),
        ("history", "cpt→dpo[kto]/loss"),  # the stage label names its non-default objective
        ("history", "cpt→dpo[kto]/kl"),  # KTO's reference point
        ("history", "cpt→dpo[kto]/accuracy"),
    }
    assert {s["name"] for s in sections} == {"acc vs acc_norm", "training: cpt", "training: cpt→dpo"}
    # the runset: the sweep's group, one colour per objective, the runs table's columns
    (runset,) = section["runSets"]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": GROUP, "disabled": False}
    ]
    assert [g["name"].removesuffix(".value") for g in runset["grouping"]] == ["objective.name"]
    assert runset["grouping"][0]["section"] == "config"
    columns = runset["runFeed"]["columnOrder"]
    assert columns[0] == "run:displayName"
    for col in columns[1:]:
        where, key = col.split(":", 1)
        assert key in available[where], col


@pytest.mark.slow
def test_a_renamed_metric_fails_the_build_not_the_dashboard(run_dir):
    config, summary, history, _ = logged(run_dir)
    keys = LoggedKeys()
    keys.add(config, {k.replace("acc_norm", "accnorm") for k in summary}, history)
    with pytest.raises(DashboardError, match="eval/builtin/acc_norm"):
        plan_dashboard(keys, tasks=["builtin"])
    keys = LoggedKeys()
    keys.add(config, summary, {k for k in history if k != "cpt→dpo[kto]/grad_norm"})
    with pytest.raises(DashboardError, match=r"history cpt→dpo\[kto\]/grad_norm"):
        plan_dashboard(keys)
    # the report reuses the panels over the same group (its wire model needs a W&B login to build)
    plan = plan_dashboard(LoggedKeys(config, summary, history, runs=1))
    report = build_report("e", "arc_lab", GROUP, plan, "r")
    grids = [b for b in report.blocks if hasattr(b, "panels")]
    assert len(grids) == 3 and all(g.runsets[0].filters == f"Group = '{GROUP}'" for g in grids)


def test_no_runs_is_one_line_error(tmp_path, capsys):
    assert main(["--entity", "e", "--project", "p", "--runs", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --runs ") and "no W&B run file" in err


def test_labels_of_one_stage_share_its_panels():
    keys = LoggedKeys()
    stages = ("cpt", "cpt→dpo", "cpt→dpo[kto]")
    keys.add({"objective.name", "stage.optim.lr"}, {"eval/t/acc", "eval/t/acc_norm"}, set())
    keys.history = {f"{s}/{m}" for s in stages for m in ("loss", "lr", "grad_norm")} | {"cpt→dpo[kto]/kl"}
    curves = plan_dashboard(keys).curves
    assert list(curves) == ["cpt", "cpt→dpo"]
    assert dict(curves["cpt→dpo"])["loss"] == ["cpt→dpo/loss", "cpt→dpo[kto]/loss"]
    assert dict(curves["cpt→dpo"])["kl"] == ["cpt→dpo[kto]/kl"]


def test_workspace_json_offline_from_known_keys():
    keys = LoggedKeys()
    keys.add(
        {"objective.name", "stage.optim.lr"},
        {"eval/arc_challenge/acc", "eval/arc_challenge/acc_norm"},
        {"sft/loss", "sft/lr", "sft/grad_norm", "sft/nll"},
    )
    plan = plan_dashboard(keys)
    assert plan.tasks == ["arc_challenge"]
    assert plan.curves == {"sft": [(m, [f"sft/{m}"]) for m in ("loss", "lr", "grad_norm", "nll")]}
    assert plan.config_columns == ["objective.name", "stage.optim.lr"]  # no beta logged: no beta axis
    from arc_lab.analysis.dashboard import build_workspace

    spec = to_json(build_workspace("e", "p", None, plan, "w"))
    assert spec["spec"]["section"]["runSets"][0]["filters"]["filters"] == []  # no group: every run


def test_no_credentials_and_no_runs_is_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc, no W&B settings
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arc_lab.analysis.dashboard",
            "--entity",
            "e",
            "--project",
            "p",
            "--group",
            "g",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "wandb login" in lines[0] and "--runs" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
