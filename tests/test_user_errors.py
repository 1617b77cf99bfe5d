"""Faults that are the user's to fix fail before any work, in one line that names the key or the file.

In-process checks go through the same functions the CLI calls (``to_run_config``, ``plan_chain``, the data
and eval loaders); a few subprocess runs check the CLI's own error path (exit status 2, one line on stderr,
no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose, load_tiny

from arc_lab.config import ConfigError


def validate(overrides: list[str]):
    """What ``python -m arc_lab`` does before any work: compose, validate, plan the chain."""
    from arc_lab.run.plan import plan_chain

    cfg = compose(overrides)
    plan = plan_chain(cfg)
    return cfg, plan[-1], plan


def config_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        validate(overrides)
    message = str(e.value)
    assert "\n" not in message, message  # one line
    return message


# ------------------------------------------------------------------------------------ defect 4: +key typos
@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["+eval.limt=5"], "eval.limt: unknown key (did you mean eval.limit?)"),
        (["+stage.optim.lrr=0.1"], "stage.optim.lrr: unknown key (did you mean stage.optim.lr?)"),
        (["+foo=1"], "foo: unknown key; top-level keys: ['model', 'data', 'stage'"),
        (["+lr=0.1"], "lr: unknown key (did you mean stage.optim.lr?)"),
        (["+stage.lora.rank=8"], "stage.lora.rank: unknown key"),
        (
            ["+objective.bta=0.2"],
            "objective.bta: not a parameter of objective=dpo (did you mean objective.beta?)",
        ),
        (
            ["model=tiny_llama", "+model.tiny.hiden_size=8"],
            "model.tiny.hiden_size: unknown key (did you mean",
        ),
        (
            ["stage.init=cpt_cpu", "stage.init_overrides=['+stage.optim.lrr=1']"],
            "stage.init='cpt_cpu' with stage.init_overrides=['+stage.optim.lrr=1']: stage.optim.lrr: unknown key",
        ),
    ],
)
def test_unknown_keys_are_refused_with_a_suggestion(hydra_ctx, overrides, expected):
    assert expected in config_error(overrides)


def test_open_dict_fields_still_take_any_key(hydra_ctx):
    # stage.deepspeed is a DeepSpeed config (its own keys), objective takes the loss's parameters
    _, run, _ = validate(
        ["launcher=deepspeed_zero2", "+stage.deepspeed.zero_optimization.round_robin_gradients=true"]
    )
    assert run.stage.deepspeed["zero_optimization"]["round_robin_gradients"] is True
    _, run, _ = validate(["objective=simpo", "objective.gamma_beta_ratio=0.3"])
    assert run.objective["gamma_beta_ratio"] == 0.3


# ------------------------------------------------------------------------ defects 8d/9: values checked early
@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["objective.beta=-1"], "objective.beta=-1.0: expected a finite number > 0 (objective=dpo)"),
        (["objective.beta=inf"], "objective.beta=inf: expected a finite number > 0"),
        (["objective=simpo", "objective.gamma_beta_ratio=-0.1"], "objective.gamma_beta_ratio=-0.1: expected"),
        (
            ["objective=cdpo", "objective.label_smoothing=0.5"],
            "objective.label_smoothing=0.5: expected in [0, 0.5)",
        ),
        (["objective=robust_dpo", "objective.eps=nan"], "objective.eps=nan: expected in [0, 0.5)"),
        (["objective=ipo", "objective.tau=0"], "objective.tau=0.0: expected a finite number > 0"),
        (["objective=orpo", "objective.lam=-1"], "objective.lam=-1.0: expected a finite number >= 0"),
        (["objective.norm=mean"], "objective.norm='mean': expected one of ['sum', 'token', 'char', 'byte']"),
        (["eval.num_fewshot=-1"], "eval.num_fewshot=-1: expected an integer >= 0"),
        (["eval.limit=0"], "eval.limit=0: expected null (all docs), an integer >= 1"),
        (["eval.limit=2.5"], "eval.limit=2.5: expected"),
        (["eval.limit=-0.5"], "eval.limit=-0.5: expected"),
        (["eval.batch_size=0"], "eval.batch_size=0: expected an integer >= 1"),
        (["eval.max_length=0"], "eval.max_length=0: expected an integer >= 1 or null"),
        (["eval.tasks=[]"], "eval.tasks=[]: expected at least one task"),
        (["stage.lora.r=0"], "stage.lora.r=0: expected an integer >= 1"),
        (["stage.lora.dropout=1.0"], "stage.lora.dropout=1.0: expected a finite number in [0, 1)"),
        (["stage.seq_len=0"], "stage.seq_len=0: expected an integer >= 2"),
        (["stage.optim.max_steps=0"], "stage.optim.max_steps=0: expected an integer >= 1 or null"),
        (["stage.optim.epochs=0"], "stage.optim.epochs=0.0: expected a finite number > 0"),
        (["stage.optim.lr=nan"], "stage.optim.lr=nan: expected a finite number > 0"),
        (["stage.optim.lr=-1e-5"], "stage.optim.lr=-1e-05: expected a finite number > 0"),
        (["stage.optim.lr=inf"], "stage.optim.lr=inf: expected a finite number > 0"),
        (
            ["stage.optim.warmup_ratio=1.5"],
            "stage.optim.warmup_ratio=1.5: expected a finite number in [0, 1]",
        ),
        (["stage.optim.grad_accum=0"], "stage.optim.grad_accum=0: expected an integer >= 1"),
        (["stage.optim.batch_size=0"], "stage.optim.batch_size=0: expected an integer >= 1"),
        (["stage.optim.max_grad_norm=-1"], "stage.optim.max_grad_norm=-1.0: expected a finite number >= 0"),
        (["stage.optim.weight_decay=nan"], "stage.optim.weight_decay=nan: expected a finite number >= 0"),
        (["stage.optim.log_every=0"], "stage.optim.log_every=0: expected an integer >= 1"),
        (["data.max_items_per_source=0"], "data.max_items_per_source=0: expected an integer >= 1 or null"),
        (["data.train_sources=[]"], "data.train_sources=[]: stage=dpo trains on questions"),
        (["stage.merge=false"], "stage.merge=False was removed (it was never read)"),
        (["model.arch=gpt2"], "model.arch='gpt2': expected one of ['llama', 'mistral']"),
        (["model=tiny_llama", "~model.tiny.num_heads"], "model.tiny is missing ['num_heads']"),
        # a chained init stage (stage.init=<preset>) is validated before the first stage starts
        (
            ["stage.init=cpt_cpu", "stage.init_overrides=['stage.optim.lr=nan']"],
            "stage.init='cpt_cpu' (the stage this one starts from): stage.optim.lr=nan: expected",
        ),
        (
            ["experiment=quickstart", "stage.init_overrides=['stage.seq_len=1']"],
            "stage.init='cpt_cpu' (the stage this one starts from): stage.seq_len=1: expected an integer >= 2",
        ),
    ],
)
def test_bad_values_fail_before_any_work(hydra_ctx, overrides, expected):
    assert expected in config_error(overrides)


def test_good_edge_values_still_validate(hydra_ctx):
    _, run, _ = validate(["eval.limit=0.5", "stage.optim.max_grad_norm=0", "stage.optim.warmup_ratio=0"])
    assert (run.eval.limit, run.stage.optim.max_grad_norm) == (0.5, 0.0)
    _, run, _ = validate(["eval.limit=50", "stage.lora.dropout=0"])
    assert run.eval.limit == 50


# ------------------------------------------------------------------------------ defect 5: model.path is read
def test_model_path_that_cannot_exist_fails_naming_model_path(hydra_ctx, tmp_path):
    assert config_error(["stage=eval", "model.path=/does/not/exist"]) == (
        "model.path='/does/not/exist': no such directory, and not a Hub id (owner/name)"
    )
    assert "model.path='./ckpt/x/y'" in config_error(["stage=eval", "model.path=./ckpt/x/y"])
    assert "'~' is not expanded" in config_error(["stage=eval", "model.path='~/ckpt'"])
    assert f"model.path='{tmp_path}': a directory without config.json" in config_error(
        ["stage=eval", f"model.path={tmp_path}"]
    )


def test_model_path_hub_id_offline_fails_early(hydra_ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in config_error(["stage=eval", "model.path=someone/not-downloaded"])


def test_model_path_switches_to_that_checkpoint(hydra_ctx, tmp_path):
    """``model.path=<dir>`` on a preset of another source loads <dir> (source becomes pretrained, which
    config.yaml then records), not the preset's weights."""
    from arc_lab.models import model_fingerprint
    from arc_lab.run.build import load_model as load_for_run
    from arc_lab.run.plan import root_ref

    saved, tok = load_tiny(  # another network than model=tiny_llama's, in every size
        "tiny_llama",
        seed=5,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        intermediate_size=32,
        max_position_embeddings=256,
    )
    saved.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    _, base_run, _ = validate(["stage=eval", "model=tiny_llama"])
    cfg, run, plan = validate(["stage=eval", "model=tiny_llama", f"model.path={tmp_path}"])
    assert (cfg.model.source, run.model.source, plan[-1].model.source) == ("pretrained",) * 3
    assert root_ref(run).key != root_ref(base_run).key  # the base-model caches do not mix the two
    model, _ = load_for_run(run, root_ref(run).path)
    assert model_fingerprint(model) == model_fingerprint(saved)


# ------------------------------------------------------------------------ defect 10: messages name the file
def _empty_split_dir(root: Path) -> Path:
    (root / "arc_easy").mkdir(parents=True)
    (root / "arc_easy" / "train.jsonl").write_text("")
    (root / "arc_easy" / "test.jsonl").write_text("\n")  # blank lines only: no rows either
    (root / "sciq").mkdir()
    (root / "sciq" / "train.jsonl").write_text("")
    return root


def test_empty_training_file_is_named(tmp_path):
    from arc_lab.data.loaders import DataError
    from arc_lab.data.training import training_items

    data = _empty_split_dir(tmp_path)
    with pytest.raises(DataError) as e:
        training_items(["builtin", "arc_easy"], data_dir=str(data), hub=False, cap=None, seed=0)
    assert str(e.value) == (
        f"{data / 'arc_easy' / 'train.jsonl'}: no training questions (data.train_sources has 'arc_easy'); "
        "fill the file or drop the source"
    )


def test_empty_cpt_source_is_named(tmp_path):
    from arc_lab.data.loaders import DataError
    from arc_lab.data.training import cpt_documents

    data = _empty_split_dir(tmp_path)
    with pytest.raises(DataError, match=f"^{data / 'sciq' / 'train.jsonl'}: no documents for CPT"):
        cpt_documents(["builtin_prose", "sciq_support"], data_dir=str(data), hub=False, cap=None)


def test_empty_eval_split_is_named(tmp_path):
    from arc_lab.data.loaders import DataError
    from arc_lab.eval.runner import load_task_items

    data = _empty_split_dir(tmp_path)
    with pytest.raises(DataError) as e:
        load_task_items("arc_easy", str(data), "test")
    assert str(e.value).startswith(
        f"{data / 'arc_easy' / 'test.jsonl'}: the test split of eval task 'arc_easy'"
    )


def test_fewshot_pool_too_small_names_eval_num_fewshot():
    from arc_lab.data.builtin import builtin_items
    from arc_lab.data.loaders import DataError
    from arc_lab.eval.tasks import build_contexts

    pool = builtin_items("train")
    with pytest.raises(DataError, match=rf"^eval.num_fewshot=999: task builtin .* pool has {len(pool)} "):
        build_contexts("builtin", builtin_items("test")[:1], pool, 999)


def test_unwritable_run_folder_is_detected(tmp_path):
    from arc_lab.run.rundir import unwritable_reason

    assert unwritable_reason(tmp_path / "new" / "run") is None
    (tmp_path / "file").write_text("")
    assert unwritable_reason(tmp_path / "file" / "run") == f"{tmp_path / 'file'} is not a directory"
    if os.geteuid() != 0:  # root writes anywhere: the mode bits only bind other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert unwritable_reason(ro / "run") == f"{ro} is not writable"


# --------------------------------------------------------------------------------------------- the CLI
def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arc_lab", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def one_line(out: subprocess.CompletedProcess) -> str:
    """The failure as the user sees it: exit status 2, one ``arc_lab:`` line on stderr, no traceback."""
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("arc_lab: "), out.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_cli_user_faults_exit_2_in_one_line(tmp_path):
    tiny = ["model=tiny_llama", f"output_root={tmp_path / 'out'}"]
    typo = one_line(run_cli(*tiny, "stage=eval", "+eval.limt=5"))
    assert "invalid configuration: eval.limt: unknown key (did you mean eval.limit?)" in typo

    (tmp_path / "file").write_text("")
    run_dir = tmp_path / "file" / "run"
    msg = one_line(run_cli(*tiny, "stage=eval", f"hydra.run.dir={run_dir}"))
    assert msg.startswith(f"arc_lab: cannot write the run folder {run_dir} (hydra.run.dir):")

    # an empty training file: found when the stage builds its data, named, nothing marked done
    data = _empty_split_dir(tmp_path / "data")
    (data / "arc_challenge").mkdir()
    (data / "arc_challenge" / "test.jsonl").write_text(
        json.dumps(
            {
                "id": "q1",
                "question": {
                    "stem": "Which is a gas?",
                    "choices": [{"label": "A", "text": "air"}, {"label": "B", "text": "rock"}],
                },
                "answerKey": "A",
            }
        )
        + "\n"
    )
    args = ["stage=dpo_cpu", "eval.before=false", f"data.data_dir={data}", "data.train_sources=[arc_easy]"]
    msg = one_line(run_cli(*tiny, *args))
    assert msg == (
        f"arc_lab: DataError: {data / 'arc_easy' / 'train.jsonl'}: no training questions "
        "(data.train_sources has 'arc_easy'); fill the file or drop the source"
    )
    assert not list((tmp_path / "out").rglob("DONE"))

    full = run_cli(*tiny, "stage=eval", "+eval.limt=5", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr  # the full stack on request


@pytest.mark.parametrize(
    "override,expected",
    [
        ("objective=nope", "Could not find 'objective/nope'; available options: cdpo, clm,"),
        (
            "stage.optim.lr=abc",
            "stage.optim.lr=abc: Value 'abc' of type 'str' could not be converted to Float",
        ),
        ("stage.optim.lr=[", "override 'stage.optim.lr=[' does not parse"),
    ],
    ids=["unknown_option", "wrong_type", "unparsable"],
)
def test_hydra_composition_errors_exit_2_in_one_line(tmp_path, override, expected):
    # Hydra's own composition errors (multi-line, exit 1 by default) go through arc_lab's one-line handler
    line = one_line(run_cli(override, f"output_root={tmp_path}"))
    assert line.startswith("arc_lab: invalid configuration: ") and expected in line, line


def test_hydra_composition_error_under_hydra_full_error_keeps_the_full_output(tmp_path):
    out = run_cli("objective=nope", f"output_root={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr and "MissingConfigException" in out.stderr


def test_composition_message_ignores_other_exceptions():
    from arc_lab.__main__ import composition_message

    assert composition_message(RuntimeError("a bug")) is None


def test_training_data_with_no_usable_pair_is_one_data_error(tmp_path):
    # every choice equals the answer: build_pairs drops them all; before, batching raised a bare ValueError
    from arc_lab.config import to_run_config
    from arc_lab.data.loaders import DataError
    from arc_lab.objectives.base import InputKind
    from arc_lab.run import build

    row = {
        "id": "e1",
        "question": {"stem": "Same?", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "x"}]},
        "answerKey": "A",
    }
    for name, split in (("arc_easy", "train"), ("arc_challenge", "test")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{split}.jsonl").write_text(json.dumps({**row, "id": f"{name}1"}) + "\n")
    cfg = compose(
        [
            "stage=dpo_cpu",
            f"data.data_dir={tmp_path}",
            "data.train_sources=[arc_easy]",
            "data.decontaminate=off",
        ]
    )
    with pytest.raises(
        DataError,
        match=r"1 training question\(s\) give no pair example for objective 'dpo' \(every distractor",
    ):
        build.training_examples(to_run_config(cfg), InputKind.PAIR, None)


@pytest.mark.slow
def test_unwritable_output_root_fails_before_the_base_evaluation(tmp_path):
    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "out"  # a file where the output folder should be: unwritable even for root
    out = run_cli(
        "model=tiny_llama", "stage=eval", f"output_root={root}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    line = one_line(out)
    assert line.startswith(
        f"arc_lab: invalid configuration: output_root={root}: cannot write the cache folder"
    )
    assert "eval: scoring" not in out.stderr  # failed before any evaluation
