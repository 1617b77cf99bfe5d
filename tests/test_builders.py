"""Builders: CPT packing, pairs / lists / SFT strings (byte-exact vs lm-eval), decontamination."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from arc_lab.data.builders import (
    ContaminationError,
    arc_challenge_test_items,
    build_lists,
    build_pairs,
    build_sft,
    cpt_texts,
    decontaminate_items,
    normalize_question,
    pack_blocks,
)
from arc_lab.data.loaders import DataSourceError, load_mc
from arc_lab.data.records import MCItem

FIXTURES = Path(__file__).parent / "fixtures"
HUB = FIXTURES / "hub"
RELEASE = FIXTURES / "release"


# --------------------------------------------------------------------------------------------- CPT
def test_pack_blocks_shapes_and_stream_prefix(smol_tokenizer):
    texts = ["The chemical symbol of sodium is Na.", "Plants release oxygen.", "A lever turns on a fulcrum."]
    stream = []
    for text in texts:
        stream += smol_tokenizer.encode(text, add_special_tokens=False) + [smol_tokenizer.eos_token_id]
    blocks = pack_blocks(texts, smol_tokenizer, seq_len=5)
    assert blocks.dtype == torch.long and blocks.shape == (len(stream) // 5, 5)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    no_eos = pack_blocks(texts, smol_tokenizer, seq_len=4, add_eos=False)
    assert smol_tokenizer.eos_token_id not in no_eos.flatten().tolist()


def test_pack_blocks_too_short_names_seq_len(smol_tokenizer):
    with pytest.raises(ValueError, match=r"give \d+ tokens, fewer than one block of seq_len=4096"):
        pack_blocks(["A short text."], smol_tokenizer)


def test_cpt_texts_sources(monkeypatch):
    monkeypatch.setenv("ARC_LAB_DATA_DIR", str(FIXTURES))
    texts = cpt_texts(["camel_biology", "builtin_prose"])
    from arc_lab.data.builtin import builtin_facts

    fact = builtin_facts()[0]
    assert texts[0].startswith("White blood cells") and any(fact.sentence in t for t in texts)
    with pytest.raises(ValueError, match="unknown CPT source"):
        cpt_texts(["wikipedia"])


def test_sciq_support_train_only_nonempty_deduped():
    # hub/sciq/train.jsonl: two rows share a support, one support is blank.
    assert cpt_texts(["sciq_support"], data_dir=HUB) == ["Ribosomes read messenger RNA and join amino acids."]


# ---------------------------------------------------------------------------------------- examples
def test_pairs_lists_sft():
    items = load_mc("arc_challenge", "train", RELEASE)  # 4, 4, 3 and 5 choices
    pairs = build_pairs(items)
    assert len(pairs) == sum(len(it.choices) - 1 for it in items) == 12
    first = pairs[0]
    assert first.prompt == (
        "Question: A student leaves an ice cube on a warm plate. What happens to the ice cube first?\nAnswer:"
    )
    assert first.chosen == " It melts into water." and first.rejected == " It turns into sand."
    assert (first.item_id, first.source) == ("FIX_R_1", "arc_challenge")
    lists = build_lists(items)
    assert lists[3].choices[lists[3].gold] == " a candle flame" and len(lists[3].choices) == 5
    sft = build_sft(items)
    assert sft[1].completion == " a pan balance" and sft[1].prompt == pairs[3].prompt


def test_pairs_drop_identical_distractor(caplog):
    item = MCItem("d1", "Q?", ("same", "other", "same"), 0, "openbookqa", "train", ("A", "B", "C"))
    with caplog.at_level(logging.WARNING):
        assert [p.rejected for p in build_pairs([item])] == [" other"]
    assert "dropped 1 pair" in caplog.text
    assert len(build_pairs([item], drop_identical=False)) == 2


def test_pair_strings_match_lm_eval_byte_for_byte(tmp_path, monkeypatch):
    """Build lm-eval's own ARC task on Hub-schema fixture rows, offline, and compare its requests."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    arc_yaml = Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml"
    files = {split: str(HUB / "arc_easy" / f"{split}.jsonl") for split in ("train", "validation", "test")}
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "fixture_arc.yaml").write_text(
        f"include: {arc_yaml}\ntask: arclab_fixture_arc\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files: {files}\n"
    )
    task = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False).load(
        "arclab_fixture_arc"
    )["tasks"]["arclab_fixture_arc"]
    task.build_all_requests()

    items = load_mc("arc_easy", "test", HUB)
    lists = build_lists(items)
    pairs = build_pairs(items)
    assert len(task.instances) == sum(len(it.choices) for it in items) == 13
    for inst in task.instances:
        context, cont = inst.arguments
        example = lists[inst.doc_id]
        assert context == example.prompt and cont == example.choices[inst.idx]
        assert task.doc_to_target(task.test_docs()[inst.doc_id]) == example.gold
        doc_pairs = [p for p in pairs if p.item_id == items[inst.doc_id].id]
        assert all(p.prompt == context and p.chosen == example.choices[example.gold] for p in doc_pairs)
        if inst.idx != example.gold:
            assert cont in {p.rejected for p in doc_pairs}


# --------------------------------------------------------------------------------- decontamination
def test_normalize_question():
    assert normalize_question("  Which  GAS, do plants\nrelease?") == "which gas do plants release"


def test_decontaminate_items_modes(caplog):
    test = load_mc("arc_challenge", "test", RELEASE)
    leaked = MCItem("leak-1", "why does a metal spoon in hot soup feel  warm", ("a", "b"), 0, "sciq", "train")
    train = [*load_mc("arc_challenge", "train", RELEASE), leaked]
    with pytest.raises(ContaminationError) as err:
        decontaminate_items(train, test, mode="refuse")
    assert "leak-1 (sciq/train) = FIX_R_6" in str(err.value)
    assert "data.decontaminate=drop" in str(err.value) and "data.decontaminate=off" in str(err.value)
    with caplog.at_level(logging.WARNING):
        kept, removed = decontaminate_items(train, test, mode="drop")
    assert kept == train[:-1] and removed == [leaked]
    assert "removed 1 training question(s)" in caplog.text and "1 sciq" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert decontaminate_items(train, test, mode="off") == (train, [])
    assert "decontamination OFF" in caplog.text
    assert decontaminate_items(train[:-1], test, mode="refuse") == (train[:-1], [])
    with pytest.raises(ValueError, match="expected one of"):
        decontaminate_items(train, test, mode="allow")


def test_arc_challenge_test_items_required(tmp_path, caplog):
    assert [it.id for it in arc_challenge_test_items(RELEASE)] == ["FIX_R_6", "FIX_R_7"]
    with pytest.raises(DataSourceError):
        arc_challenge_test_items(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert arc_challenge_test_items(tmp_path, required=False) == []
    assert "decontamination against ARC-Challenge test was NOT possible" in caplog.text
