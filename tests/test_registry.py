"""The data-set registry (arc_lab.data.registry) is the one list of data sets and eval tasks.

* Config validation reads it (and runner.BACKENDS, loggers.WANDB_MODES): every entry is accepted, any other
  name is refused with the list of registered names.
* A new eval task is one entry: a fake entry added with ``monkeypatch.setitem`` (no other module touched) is
  loaded, fingerprinted and scored by both backends, with lm-eval rendering exactly our prompts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ONE_LAYER, compose, load_tiny, run_config

from arc_lab.config import ConfigError, DataConfig, EvalConfig, LoggerConfig
from arc_lab.data import registry
from arc_lab.data.records import MCItem
from arc_lab.data.registry import CPT_SOURCES, DATASETS, DataSet

ROOT = Path(__file__).resolve().parents[1]

#: Two fake tasks that reuse existing row schemas and prompt styles: one entry each.
FAKES = (
    DataSet(name="tiny_qa", loader="choice", prompt="arc", harness_yaml="arc/arc_easy.yaml"),
    DataSet(
        name="tiny_support",
        loader="sciq",
        prompt="sciq",
        harness_yaml="sciq/sciq.yaml",
        splits=("train", "test"),
    ),
)


@pytest.fixture()
def fakes(monkeypatch):
    for spec in FAKES:
        monkeypatch.setitem(DATASETS, spec.name, spec)
    return FAKES


# ----------------------------------------------------------------------------------------- validation
def test_every_registry_name_is_accepted_and_others_are_refused_with_the_list():
    from arc_lab.eval.runner import BACKENDS
    from arc_lab.train.loggers import WANDB_MODES

    for name in DATASETS:
        assert EvalConfig(tasks=[name]).tasks == [name]
        assert DataConfig(name="d", train_sources=[name]).train_sources == [name]
    for source in CPT_SOURCES:
        assert DataConfig(name="d", cpt_sources=[source]).cpt_sources == [source]
    for backend in BACKENDS:
        assert EvalConfig(backend=backend).backend == backend
    for mode in WANDB_MODES:
        assert LoggerConfig(wandb=mode).wandb == mode

    known = list(DATASETS)
    with pytest.raises(ConfigError) as e:
        EvalConfig(tasks=["builtin", "hellaswag"])
    assert str(e.value) == f"eval.tasks[]='hellaswag': expected one of {known}"
    with pytest.raises(ConfigError) as e:
        DataConfig(name="d", train_sources=["hellaswag"])
    assert str(e.value) == f"data.train_sources[]='hellaswag': expected one of {known}"
    with pytest.raises(ConfigError, match=r"data.cpt_sources\[\]='wiki': expected one of \['builtin_prose'"):
        DataConfig(name="d", cpt_sources=["wiki"])
    with pytest.raises(
        ConfigError, match=r"eval.backend='fast': expected one of \['ours', 'lm_eval', 'both'\]"
    ):
        EvalConfig(backend="fast")
    with pytest.raises(ConfigError, match=r"logger.wandb='cloud': expected one of \['online'"):
        LoggerConfig(wandb="cloud")


def test_validation_reads_the_registry_at_call_time(hydra_ctx, monkeypatch):
    """A name is valid exactly while the registry holds it: the composed config is refused, then accepted
    once the entry exists (no list in config.py to keep in step)."""
    overrides = ["eval.tasks=[tiny_qa]", "data.train_sources=[tiny_qa]", "stage=dpo_cpu", "objective=dpo"]
    with pytest.raises(ConfigError, match=r"\[\]='tiny_qa': expected one of \['arc_challenge'"):
        run_config(overrides)
    monkeypatch.setitem(DATASETS, "tiny_qa", FAKES[0])
    run = run_config(overrides)
    assert run.eval.tasks == ["tiny_qa"] and run.data.train_sources == ["tiny_qa"]


def test_an_entry_is_checked_when_it_is_made():
    with pytest.raises(ValueError, match=r"loader='csv': expected one of \['choice', 'sciq', 'builtin'\]"):
        DataSet(name="x", loader="csv", prompt="arc", harness_yaml="arc/arc_easy.yaml")
    with pytest.raises(ValueError, match=r"prompt='mmlu': expected one of \['arc', 'obqa', 'sciq'\]"):
        DataSet(name="x", loader="choice", prompt="mmlu", harness_yaml="arc/arc_easy.yaml")
    with pytest.raises(ValueError, match=r"splits \['dev'\] are not canonical"):
        DataSet(
            name="x", loader="choice", prompt="arc", harness_yaml="arc/arc_easy.yaml", splits=("train", "dev")
        )


def test_the_registry_imports_nothing_heavy_and_not_the_config():
    """config.py imports it while validating at start-up: no torch/transformers/datasets, no config cycle."""
    code = (
        "import sys; import arc_lab.data.registry, arc_lab.data.loaders, arc_lab.eval.tasks; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'arc_lab.config') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_question_prompt_has_one_definition():
    """Training examples and the eval prompt of the ARC style are the same text, from the registry."""
    from arc_lab.data.builders import build_pairs, build_sft
    from arc_lab.eval.tasks import doc_to_text

    item = MCItem("q1", "Which gas do plants take in?", ("oxygen", "carbon dioxide"), 1, "arc_easy", "train")
    expected = "Question: Which gas do plants take in?\nAnswer:"
    assert registry.question_prompt(item.question) == expected
    assert doc_to_text("arc_easy", item) == build_sft([item])[0].prompt == build_pairs([item])[0].prompt
    sciq = MCItem("s", "Why?", ("a", "b", "c", "d"), 3, "sciq", "test", support=" Because.")
    assert doc_to_text("sciq", sciq) == "Because.\n" + expected.replace(
        "Which gas do plants take in?", "Why?"
    )


# ------------------------------------------------------------------------------------- one new entry
def _choice_row(i: int, split: str) -> dict:
    """A release-schema (ARC-V1) row: ``question{stem, choices[{text, label}]}``, ``answerKey``."""
    texts = [f"the {w} of sample {i}" for w in ("colour", "mass", "shape", "smell")]
    return {
        "id": f"tq-{split}-{i}",
        "question": {
            "stem": f"Which property of sample {i} does a balance measure?",
            "choices": [{"text": t, "label": lab} for t, lab in zip(texts, "ABCD", strict=True)],
        },
        "answerKey": "B",
    }


def _sciq_row(i: int) -> dict:
    return {
        "question": f"What makes object {i} fall?",
        "distractor1": "magnetism",
        "distractor2": "friction",
        "distractor3": f"light number {i}",
        "correct_answer": "gravity",
        "support": f"Object {i} falls because gravity pulls on its mass.",
    }


def _write(folder: Path, split: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def fake_data(tmp_path) -> Path:
    """``<tmp>/tiny_qa`` and ``<tmp>/tiny_support``: train (few-shot pool) and test, 10 and 6 rows."""
    for split, n in (("train", 10), ("test", 6)):
        _write(tmp_path / "tiny_qa", split, [_choice_row(i, split) for i in range(n)])
        _write(
            tmp_path / "tiny_support",
            split,
            [_sciq_row(i + (100 if split == "train" else 0)) for i in range(n)],
        )
    return tmp_path


def test_a_new_entry_is_loadable_without_touching_other_modules(fakes, fake_data):
    from arc_lab.data.builders import build_pairs
    from arc_lab.data.loaders import dataset_fingerprint, load_mc
    from arc_lab.eval.runner import eval_data_inputs
    from arc_lab.eval.tasks import build_contexts

    qa = load_mc("tiny_qa", "test", fake_data)
    assert [(i.id, i.source, i.gold, i.labels) for i in qa[:1]] == [
        ("tq-test-0", "tiny_qa", 1, tuple("ABCD"))
    ]
    sup = load_mc("tiny_support", "train", fake_data)
    assert (sup[0].id, sup[0].source, sup[0].gold) == ("tiny_support-train-0", "tiny_support", 3)
    with pytest.raises(
        ValueError, match=r"tiny_support has no validation split: its splits are \['train', 'test'\]"
    ):
        load_mc("tiny_support", "dev", fake_data)
    ctx = build_contexts("tiny_support", sup[:1], sup, 0)[0]
    assert ctx == f"{sup[0].support}\nQuestion: {sup[0].question}\nAnswer:"
    pairs = build_pairs(load_mc("tiny_qa", "train", fake_data, duplicates="drop"))  # a training source too
    assert len(pairs) == 30  # 10 questions x 3 distractors
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].source) == (
        "Question: Which property of sample 0 does a balance measure?\nAnswer:",
        " the mass of sample 0",
        "tiny_qa",
    )
    fps = eval_data_inputs(["tiny_qa", "tiny_support"], fake_data, num_fewshot=2)
    assert sorted(fps) == ["tiny_qa/test", "tiny_qa/train", "tiny_support/test", "tiny_support/train"]
    assert fps["tiny_qa/test"] == dataset_fingerprint("tiny_qa", "test", fake_data)


@pytest.mark.slow
def test_a_new_entry_is_evaluable_by_both_backends_with_lm_evals_own_prompts(fakes, fake_data, tmp_path):
    """Both backends score the fake tasks from the files; lm-eval, including the entry's harness YAML,
    renders exactly our prompts (sha256 of every context) and agrees on acc/acc_norm. Log-likelihoods
    agree to 1e-4: each is a sum over a few tokens of fp32 log-softmax values of magnitude ~ln(49152) ~ 11,
    computed by two code paths with different batch padding, so rounding is ~1e-6..1e-5; a wrong prompt
    or continuation would change them by O(1)."""
    from arc_lab.eval import run_eval
    from arc_lab.eval.outputs import read_samples

    model, tok = load_tiny("tiny_llama", **ONE_LAYER)
    tasks = {"tiny_qa": 2, "tiny_support": 1}
    out = tmp_path / "eval"
    res = run_eval(
        "both",
        model,
        tok,
        tasks=list(tasks),
        num_fewshot=tasks,
        data_dir=fake_data,
        out_dir=out,
        progress=False,
    )
    for task in tasks:
        p = res["parity"][task]
        assert p["context_mismatch"] == [] and p["acc_disagree"] == [] and p["acc_norm_disagree"] == [], p
        assert p["max_abs_ll_diff"] < 1e-4 and p["n_items"] == 6, p
        assert res[task]["n"] == 6 and res[task]["num_fewshot"] == tasks[task]
        assert len(read_samples(out / "samples" / f"{task}.jsonl")) == 6


# ----------------------------------------------------------- a task with its own schema and eval split
def _preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py`` ``preprocess`` (WikiHow artefacts out), as a task author would copy
    it into their hook module."""
    import re

    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def parse_hellaswag_row(row: dict, *, source: str, split: str, index: int, where: str) -> MCItem:
    """A HellaSwag row (``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``, ``label``) as an item: the
    question is the raw context, the choices the processed endings (the scored continuations)."""
    from arc_lab.data.loaders import DataError

    for key in ("ind", "activity_label", "ctx_a", "ctx_b", "endings", "label"):
        if key not in row:
            raise DataError(f"{where}: field {key!r} is missing")
    return MCItem(
        id=f"{source}-{row['ind']}",
        question=f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}",
        choices=tuple(_preprocess(e) for e in row["endings"]),
        gold=int(row["label"]),
        source=source,
        split=split,
    )


def hellaswag_text(item: MCItem) -> str:
    """HellaSwag's ``doc_to_text``: the processed context (its ``query``)."""
    return _preprocess(item.question)


def hellaswag_harness_row(item: MCItem) -> dict:
    """An item back in HellaSwag's schema, for lm-eval's own ``hellaswag.yaml`` and its ``process_docs``."""
    label, _, ctx = item.question.partition(": ")
    return {
        "ind": item.id,
        "activity_label": label,
        "ctx_a": ctx,
        "ctx_b": "",
        "endings": list(item.choices),
        "label": str(item.gold),
    }


#: Registered in the test alone: the row parser, prompt and harness row are hooks in this module; the task
#: is scored on validation (HellaSwag's test answers are hidden) and is decontaminated against.
HELLASWAG_LIKE = DataSet(
    name="hellaswag_like",
    loader=f"{__name__}:parse_hellaswag_row",
    prompt=f"{__name__}:hellaswag_text",
    harness_yaml="hellaswag/hellaswag.yaml",
    harness_row=f"{__name__}:hellaswag_harness_row",
    splits=("train", "validation"),
    eval_split="validation",
)


def _hellaswag_row(i: int) -> dict:
    """A WikiHow-style row with the artefacts ``preprocess`` removes (``[title]``, ``[step]``)."""
    return {
        "ind": i,
        "activity_label": f"Cooking pasta {i}",
        "ctx_a": f"[header] How to cook pasta number {i} [title] Boil the water.",
        "ctx_b": "then",
        "endings": [
            f"Add the pasta {i} [step] and stir it.",
            "Paint the pot blue.",
            f"Throw the water {i} away.",
            "Sing to the stove [substeps] loudly.",
        ],
        "label": str(i % 4),
    }


@pytest.fixture()
def hellaswag_data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setitem(DATASETS, HELLASWAG_LIKE.name, HELLASWAG_LIKE)
    folder = tmp_path / "data" / "hellaswag_like"
    _write(folder, "train", [_hellaswag_row(100 + i) for i in range(4)])
    _write(folder, "validation", [_hellaswag_row(i) for i in range(6)])
    return tmp_path / "data"


def test_a_task_with_its_own_schema_and_eval_split_is_one_entry(hellaswag_data):
    """Loaded with its own parser, scored on validation, fingerprinted by that split, refused for model
    selection (no held-out split), and checked against by decontamination."""
    from arc_lab.data.loaders import DataError, load_mc
    from arc_lab.data.training import decontamination_sets, question_inputs
    from arc_lab.eval.runner import eval_data_inputs, load_task_items
    from arc_lab.eval.tasks import FEWSHOT_SEED, build_contexts, drops_eval_doc

    items, pool = load_task_items("hellaswag_like", hellaswag_data)
    assert (len(items), len(pool), items[1].gold, items[0].split) == (6, 4, 1, "validation")
    assert items[0].choices[0] == "Add the pasta 0 and stir it."
    assert items[0].choices[3] == "Sing to the stove loudly."
    assert build_contexts("hellaswag_like", items[:1], pool, 0) == [
        "Cooking pasta 0: How to cook pasta number 0. Boil the water. Then"
    ]
    # lm-eval draws n + 1 few-shot docs for a task scored on validation: a plain draw of n gives other prompts
    assert drops_eval_doc("hellaswag_like") and not drops_eval_doc("arc_challenge")
    rnd = random.Random(FEWSHOT_SEED)
    plain = [rnd.sample(pool, 1)[0] for _ in items]
    shots = [c.split("\n\n")[0] for c in build_contexts("hellaswag_like", items, pool, 1)]
    assert any(s != f"{hellaswag_text(p)} {p.choices[p.gold]}" for s, p in zip(shots, plain, strict=True))
    assert sorted(eval_data_inputs(["hellaswag_like"], hellaswag_data)) == ["hellaswag_like/validation"]
    with pytest.raises(ValueError, match=r"eval.split=validation: task hellaswag_like has no held-out"):
        eval_data_inputs(["hellaswag_like"], hellaswag_data, split="validation")
    with pytest.raises(ConfigError, match=r"^eval.split=validation: task hellaswag_like has no held-out"):
        run_config(["eval.tasks=[hellaswag_like]", "eval.split=validation"])  # refused before any work
    assert decontamination_sets(["builtin", "hellaswag_like"]) == [
        ("arc_challenge", "test"),
        ("hellaswag_like", "validation"),
    ]
    keys = question_inputs(["builtin"], data_dir=hellaswag_data, hub=False, eval_tasks=["hellaswag_like"])
    assert keys["decontamination/arc_challenge/test"] == "unavailable"  # built-in training needs no ARC file
    assert "decontamination/hellaswag_like/validation" in keys
    bad = hellaswag_data / "hellaswag_like" / "validation.jsonl"
    bad.write_text(json.dumps({k: v for k, v in _hellaswag_row(0).items() if k != "label"}) + "\n")
    with pytest.raises(
        DataError, match=r"^hellaswag_like/validation.jsonl line 1: field 'label' is missing$"
    ):
        load_mc("hellaswag_like", "validation", hellaswag_data)


@pytest.mark.slow
def test_a_task_with_its_own_schema_passes_the_parity_check_end_to_end(hellaswag_data, tmp_path, monkeypatch):
    """``stage=eval eval.backend=both`` through the pipeline: lm-eval runs its installed ``hellaswag.yaml``
    (its ``process_docs`` included) on the rows the entry writes, scores the validation split, and renders
    exactly our prompts and continuations; acc / acc_norm agree and log-likelihoods agree to 1e-4 (the bound of
    the test above, same reasoning)."""
    from arc_lab.run.pipeline import run_pipeline
    from arc_lab.run.plan import plan_chain

    cfg = compose(
        [
            "model=tiny_llama",
            "stage=eval",
            "eval.tasks=[hellaswag_like]",
            "eval.num_fewshot=1",
            "eval.backend=both",
            f"data.data_dir={hellaswag_data}",
            f"output_root={tmp_path / 'out'}",
        ]
    )
    run_dir = tmp_path / "run"
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    run_pipeline(plan_chain(cfg), run_dir)
    # the harness ran offline, and the environment is as it was: a later cell of a multirun may need the Hub
    assert "HF_HUB_OFFLINE" not in os.environ and "HF_DATASETS_OFFLINE" not in os.environ
    metrics = json.loads((run_dir / "metrics.json").read_text())
    task = metrics["hellaswag_like"]
    assert task["split"] == "validation" and task["n"] == 6 and task["num_fewshot"] == 1, task
    assert metrics["lm_eval"]["hellaswag_like"]["split"] == "validation"
    p = metrics["parity"]["hellaswag_like"]
    assert p["context_mismatch"] == [] and p["acc_disagree"] == [] and p["acc_norm_disagree"] == [], p
    assert p["max_abs_ll_diff"] < 1e-4 and p["n_items"] == 6, p


# ------------------------------------------------------------------------------------- CPT prose sources
def test_a_new_prose_source_is_one_table_entry(monkeypatch, tmp_path):
    """A source added to PROSE_SOURCES alone is accepted by config validation, read, fingerprinted and
    located; before the table, an unknown name was read and hashed as a CAMEL subject."""
    import sys
    import types

    from arc_lab.data import registry
    from arc_lab.data.training import cpt_documents, cpt_inputs, cpt_location

    mod = types.ModuleType("fake_prose")
    mod.read = lambda data_dir, hub, topic: [f"{topic} doc 1", f"{topic} doc 2"]
    mod.fp = lambda data_dir, hub, topic: f"fp-{topic}"
    mod.where = lambda data_dir, hub, topic: f"the {topic} notes"
    monkeypatch.setitem(sys.modules, "fake_prose", mod)
    entry = registry.ProseSource(
        name="notes",
        reader="fake_prose:read",
        fingerprint="fake_prose:fp",
        location="fake_prose:where",
        args=("geology",),
    )
    monkeypatch.setitem(registry.PROSE_SOURCES, "notes", entry)
    assert DataConfig(name="d", cpt_sources=["notes"]).cpt_sources == ["notes"]
    assert cpt_documents(["notes", "builtin_prose"], data_dir=None, hub=False, cap=3)[:2] == [
        "geology doc 1",
        "geology doc 2",
    ]
    assert cpt_inputs(["notes"], data_dir=None, hub=False) == {"notes": "fp-geology"}
    assert cpt_location("notes", None, False) == "the geology notes"


def test_an_unknown_prose_source_fails_naming_the_registered_ones():
    from arc_lab.data.builders import cpt_texts
    from arc_lab.data.training import cpt_inputs

    for call in (
        lambda: cpt_texts(["camel_geology"]),
        lambda: cpt_inputs(["camel_geology"], data_dir=None, hub=False),
    ):
        with pytest.raises(
            ValueError, match=r"unknown CPT source 'camel_geology': registered sources: \['builtin_prose'"
        ):
            call()
    with pytest.raises(ConfigError, match="data.cpt_sources"):
        DataConfig(name="d", cpt_sources=["camel_geology"])
