"""Faults that are the user's to fix fail before any work, in one line that names the key or the file.

In-process checks go through the same functions the CLI calls (``to_run_config``, ``plan_chain``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from arc_lab.config import ConfigError, register_configs, to_run_config

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()


@pytest.fixture()
def hydra_ctx():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def validate(overrides: list[str]):
    """What ``python -m arc_lab`` does before any work: compose, validate, plan the chain."""
    from arc_lab.pipeline import plan_chain

    cfg = compose(config_name="config", overrides=overrides)
    run = to_run_config(cfg)
    return cfg, run, plan_chain(cfg)


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
    assert f"model.path='{tmp_path}': a directory without config.json" in config_error(
        ["stage=eval", f"model.path={tmp_path}"]
    )


def test_model_path_hub_id_offline_fails_early(hydra_ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in config_error(["stage=eval", "model.path=someone/not-downloaded"])


def test_model_path_switches_to_that_checkpoint(hydra_ctx, tmp_path):
    """``model.path=<dir>`` on a preset of another source loads <dir> (source becomes pretrained, which
    config.yaml then records), not the preset's weights."""
    from arc_lab.models import load_model, model_fingerprint
    from arc_lab.pipeline import load_ref, root_ref

    tiny = dict(
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        intermediate_size=32,
        max_position_embeddings=256,
    )
    saved, tok = load_model(source="random", tiny=tiny, seed=5)
    saved.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    base_cfg, _, _ = validate(["stage=eval", "model=tiny_llama"])
    cfg, run, plan = validate(["stage=eval", "model=tiny_llama", f"model.path={tmp_path}"])
    assert (cfg.model.source, run.model.source, plan[-1].model.source) == ("pretrained",) * 3
    assert root_ref(cfg).key != root_ref(base_cfg).key  # the base-model caches do not mix the two
    model, _ = load_ref(cfg, root_ref(cfg))
    assert model_fingerprint(model) == model_fingerprint(saved)
