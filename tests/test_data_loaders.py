"""Loaders: real rows from ../shared/data (skipped when absent), both schemas on fixtures, loud errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from arc_lab.data.loaders import (
    DataError,
    DataSourceError,
    canonical_split,
    dataset_fingerprint,
    load_camel,
    load_mc,
    read_camel_zip,
)

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE = FIXTURES / "release"
HUB = FIXTURES / "hub"


# ------------------------------------------------------------------------------------ shared data
@pytest.mark.shared_data
@pytest.mark.parametrize(
    "dataset, counts",
    [
        ("arc_challenge", (1119, 299, 1172)),
        ("arc_easy", (2251, 570, 2376)),
        ("openbookqa", (4957, 500, 500)),
        ("sciq", (11679, 1000, 1000)),
    ],
)
def test_shared_row_counts(shared_data_dir, dataset, counts):
    got = tuple(len(load_mc(dataset, split, shared_data_dir)) for split in ("train", "dev", "test"))
    assert got == counts


@pytest.mark.shared_data
def test_shared_arc_challenge_numeric_labels_and_choice_counts(shared_data_dir):
    train = load_mc("arc_challenge", "train", shared_data_dir)
    by_id = {item.id: item for item in train}
    item = by_id["NYSEDREGENTS_2004_8_31"]  # labels 1-4, answerKey "2"
    assert item.labels == ("1", "2", "3", "4")
    assert item.gold == 1 and item.choices[1] == "bubbles when acid is placed on it"
    assert sum(it.labels[0] == "1" for it in train) == 23
    test = load_mc("arc_challenge", "test", shared_data_dir)
    sizes = {len(it.choices) for it in test}
    assert {3, 4, 5} <= sizes
    assert all(it.split == "test" and it.source == "arc_challenge" for it in test)


@pytest.mark.shared_data
def test_shared_sciq_order_gold_and_u2028(shared_data_dir):
    train = load_mc("sciq", "train", shared_data_dir)
    assert all(it.gold == 3 for it in train)
    assert train[0].id == "sciq-train-0" and train[-1].id == "sciq-train-11678"
    assert train[0].choices == ("protozoa", "gymnosperms", "viruses", "mesophilic organisms")
    rows_with_sep = [it for it in train if "\u2028" in it.question + it.support + "".join(it.choices)]
    assert len(rows_with_sep) == 2
    assert sum(not it.support for it in train) > 0  # ~10% have no support, kept as ""


@pytest.mark.shared_data
def test_shared_obqa_stems_and_fingerprint(shared_data_dir):
    dev = load_mc("openbookqa", "validation", shared_data_dir)
    assert all(len(it.choices) == 4 and it.labels == ("A", "B", "C", "D") for it in dev)
    fp = dataset_fingerprint("openbookqa", "valid", shared_data_dir)
    assert fp == dataset_fingerprint("openbookqa", "dev", shared_data_dir) and len(fp) == 16


# ---------------------------------------------------------------------------------------- fixtures
def test_release_schema_fixture():
    items = load_mc("arc_challenge", "train", RELEASE)
    assert [it.id for it in items] == ["FIX_R_1", "FIX_R_2", "FIX_R_3", "FIX_R_4"]
    assert items[1].labels == ("1", "2", "3", "4") and items[1].gold == 1
    assert len(items[2].choices) == 3 and items[2].gold == 1
    assert len(items[3].choices) == 5 and items[3].choices[items[3].gold] == "a candle flame"
    assert load_mc("arc_challenge", "validation", RELEASE)[0].split == "validation"


def test_hub_schema_fixture():
    test = load_mc("arc_easy", "test", HUB)
    assert [it.gold for it in test] == [2, 1, 3]
    assert test[1].labels == ("1", "2", "3", "4")
    assert test[2].question == "Which is a renewable resource?" and len(test[2].choices) == 5
    assert len(load_mc("arc_easy", "dev", HUB)[0].choices) == 3  # validation.jsonl under the "dev" alias


def test_obqa_hub_question_stem_and_spaced_key():
    (item,) = load_mc("openbookqa", "test", HUB)
    assert item.question == "To keep a drink cold for longer, you could"
    assert item.gold == 1  # answerKey " B"


def test_obqa_release_schema():
    (item,) = load_mc("openbookqa", "valid", RELEASE)
    assert item.question.startswith("A plant that is kept") and item.gold == 1


def test_sciq_release_u2028_is_not_a_line_break():
    items = load_mc("sciq", "validation", RELEASE)
    assert len(items) == 2
    assert "\u2028" in items[0].support and items[0].support.endswith("into the air.")
    assert items[0].choices == ("nitrogen", "carbon monoxide", "helium", "oxygen") and items[0].gold == 3
    assert items[1].support == "" and items[1].id == "sciq-validation-1"


def test_sciq_hub_layout_matches_release():
    items = load_mc("sciq", "train", HUB)
    assert [it.choices[3] for it in items] == ["ribosome", "ampere", "kinetic"]
    assert items[0].labels == ()


def test_env_var_data_dir(monkeypatch):
    monkeypatch.setenv("ARC_LAB_DATA_DIR", str(HUB))
    assert len(load_mc("arc_easy", "train")) == 2


def test_no_data_dir_no_hub_says_what_to_set(monkeypatch):
    monkeypatch.delenv("ARC_LAB_DATA_DIR", raising=False)
    with pytest.raises(DataSourceError, match="ARC_LAB_DATA_DIR.*data.data_dir.*data.hub=true"):
        load_mc("arc_challenge", "train")


def test_hub_failure_offline_names_dataset(monkeypatch):
    monkeypatch.delenv("ARC_LAB_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataSourceError, match=r"arc_easy/test: could not read allenai/ai2_arc/ARC-Easy"):
        load_mc("arc_easy", "test", hub=True)


def test_split_aliases_and_unknown_split():
    assert [canonical_split(s) for s in ("dev", "valid", "validation", "train", "test")] == [
        "validation",
        "validation",
        "validation",
        "train",
        "test",
    ]
    with pytest.raises(ValueError, match="unknown split 'eval'.*'dev'.*'valid'"):
        load_mc("arc_easy", "eval", HUB)
    with pytest.raises(ValueError, match="unknown dataset 'mmlu'"):
        load_mc("mmlu", "test", HUB)


def test_missing_split_file(tmp_path):
    (tmp_path / "arc_easy").mkdir()
    with pytest.raises(DataSourceError, match="no file validation.jsonl or dev.jsonl or valid.jsonl"):
        load_mc("arc_easy", "validation", tmp_path)


def test_fingerprint_tracks_file_bytes(tmp_path):
    folder = tmp_path / "arc_easy"
    folder.mkdir()
    path = folder / "test.jsonl"
    path.write_bytes((HUB / "arc_easy" / "test.jsonl").read_bytes())
    before = dataset_fingerprint("arc_easy", "test", tmp_path)
    assert before == dataset_fingerprint("arc_easy", "test", HUB)
    path.write_bytes(path.read_bytes() + b"\n")
    assert dataset_fingerprint("arc_easy", "test", tmp_path) != before


# ---------------------------------------------------------------------------------------- errors
def _write(tmp_path: Path, dataset: str, rows: list[str]) -> Path:
    folder = tmp_path / dataset
    folder.mkdir(exist_ok=True)
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def _arc_row(**changes) -> str:
    row = {
        "id": "x1",
        "question": {
            "stem": "Q?",
            "choices": [{"text": t, "label": lab} for t, lab in zip("wxyz", "ABCD", strict=True)],
        },
        "answerKey": "A",
    }
    row.update(changes)
    return json.dumps(row)


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (
            _arc_row(answerKey="F"),
            "arc_challenge/train.jsonl line 3: field 'answerKey' = 'F' is not one of the labels ['A', 'B', 'C', 'D']",
        ),
        (_arc_row(id=7), "arc_challenge/train.jsonl line 3: field 'id' = 7 is not a non-empty str"),
        (
            _arc_row(question={"choices": []}),
            "arc_challenge/train.jsonl line 3: field 'question.stem' is missing",
        ),
        (
            _arc_row(
                question={"stem": "Q?", "choices": [{"text": "", "label": "A"}, {"text": "b", "label": "B"}]}
            ),
            "arc_challenge/train.jsonl line 3: field 'question.choices[0].text' = '' is not a non-empty str",
        ),
        ('{"id": "x1", "question": ', "arc_challenge/train.jsonl line 3: invalid JSON"),
        (
            json.dumps(
                {
                    "id": "h",
                    "question": "Q?",
                    "choices": {"text": ["a", "b"], "label": ["A"]},
                    "answerKey": "A",
                }
            ),
            "arc_challenge/train.jsonl line 3: field 'choices' has 2 texts but 1 labels",
        ),
    ],
)
def test_malformed_row_names_file_line_field(tmp_path, bad_row, message):
    root = _write(tmp_path, "arc_challenge", [_arc_row(), "", bad_row])  # line 2 is blank: still counted
    with pytest.raises(DataError) as err:
        load_mc("arc_challenge", "train", root)
    assert str(err.value).startswith(message)


def test_malformed_sciq_row(tmp_path):
    row = {"question": "Q?", "distractor1": "a", "distractor2": "b", "correct_answer": "d", "support": ""}
    root = _write(tmp_path, "sciq", [json.dumps(row)])
    with pytest.raises(DataError, match=r"sciq/train.jsonl line 1: field 'distractor3' is missing"):
        load_mc("sciq", "train", root)


# ------------------------------------------------------------------------------------------ CAMEL
def test_camel_json_files_and_jsonl():
    biology = load_camel("biology", FIXTURES)
    assert len(biology) == 2 and biology[0].startswith("White blood cells")
    assert load_camel("chemistry", FIXTURES) == ["They neutralise each other and form a salt and water."]


def test_camel_zip_like_the_hub(tmp_path):
    path = tmp_path / "physics.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("physics/2_1.json", json.dumps({"message_1": "q", "message_2": "second"}))
        zf.writestr("physics/1_1.json", json.dumps({"message_1": "q", "message_2": "first"}))
    assert read_camel_zip(path) == ["first", "second"]


def test_camel_errors(tmp_path):
    folder = tmp_path / "camel_physics"
    folder.mkdir()
    with pytest.raises(DataSourceError, match="no \\*.json or \\*.jsonl files"):
        load_camel("physics", tmp_path)
    (folder / "a.json").write_text(json.dumps({"message_1": "q", "message_2": "  "}))
    with pytest.raises(
        DataError, match="camel_physics/a.json: field 'message_2' = '  ' is not a non-empty str"
    ):
        load_camel("physics", tmp_path)
    with pytest.raises(ValueError, match="unknown CAMEL subject 'geology'"):
        load_camel("geology", tmp_path)


# ------------------------------------------------------------------------- duplicates and encoding
def _write_split(tmp_path: Path, dataset: str, split: str, rows: list[str]) -> Path:
    folder = tmp_path / dataset
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def _sciq_row(question: str = "Q?", d1: str = "a") -> str:
    return json.dumps(
        {
            "question": question,
            "distractor1": d1,
            "distractor2": "b",
            "distractor3": "c",
            "correct_answer": "d",
            "support": "",
        }
    )


def test_duplicate_id_in_an_eval_split_fails_naming_file_and_lines(tmp_path):
    rows = [_arc_row(id="a"), _arc_row(id="b"), _arc_row(id="a"), _arc_row(id="b")]
    root = _write_split(tmp_path, "arc_easy", "test", rows)
    with pytest.raises(DataError) as err:
        load_mc("arc_easy", "test", root)
    msg = str(err.value)
    assert msg.startswith("arc_easy/test.jsonl line 3: duplicate id 'a' as arc_easy/test.jsonl line 1")
    assert "2 repeated rows in this file" in msg and "\n" not in msg


def test_duplicate_train_rows_are_dropped_with_a_warning(tmp_path, caplog):
    rows = [_arc_row(id="a"), _arc_row(id="b"), _arc_row(id="a"), _arc_row(id="a")]
    root = _write(tmp_path, "arc_easy", rows)
    with caplog.at_level("WARNING", logger="arc_lab.data.loaders"):
        items = load_mc("arc_easy", "train", root, duplicates="drop")
    assert [it.id for it in items] == ["a", "b"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "dropped 2 row(s) identical to an earlier row with the same id" in warning
    assert "arc_easy/train.jsonl line 3 repeats line 1" in warning
    with pytest.raises(DataError, match="line 3: duplicate id 'a'"):  # the strict default
        load_mc("arc_easy", "train", root)


def test_duplicate_train_id_with_different_content_fails(tmp_path):
    rows = [_arc_row(id="a"), _arc_row(id="a", answerKey="B")]
    root = _write(tmp_path, "arc_easy", rows)
    with pytest.raises(DataError) as err:
        load_mc("arc_easy", "train", root, duplicates="drop")
    assert str(err.value).startswith(
        "arc_easy/train.jsonl line 2: id 'a' was already used by arc_easy/train.jsonl line 1 for a different row"
    )


def test_sciq_duplicates_are_identical_rows_not_repeated_questions(tmp_path):
    # the same question with other distractors is another row (SciQ train does this 70 times)
    root = _write_split(tmp_path, "sciq", "test", [_sciq_row(), _sciq_row(d1="z"), _sciq_row("Q2?")])
    assert [it.id for it in load_mc("sciq", "test", root)] == ["sciq-test-0", "sciq-test-1", "sciq-test-2"]
    root = _write_split(tmp_path, "sciq", "test", [_sciq_row(), _sciq_row("Q2?"), _sciq_row()])
    with pytest.raises(DataError, match=r"sciq/test.jsonl line 3: the same row as sciq/test.jsonl line 1"):
        load_mc("sciq", "test", root)
    root = _write_split(tmp_path, "sciq", "train", [_sciq_row(), _sciq_row("Q2?"), _sciq_row()])
    assert [it.id for it in load_mc("sciq", "train", root, duplicates="drop")] == [
        "sciq-train-0",
        "sciq-train-1",
    ]


@pytest.mark.shared_data
def test_shared_data_has_no_duplicates(shared_data_dir, caplog):
    # every released split loads under the strict policy: no false duplicates (SciQ's repeated questions)
    with caplog.at_level("WARNING", logger="arc_lab.data.loaders"):
        for dataset in ("arc_challenge", "arc_easy", "openbookqa", "sciq"):
            for split in ("train", "validation", "test"):
                load_mc(dataset, split, shared_data_dir)
        assert len(load_mc("sciq", "train", shared_data_dir, duplicates="drop")) == 11679
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_non_utf8_bytes_name_line_and_byte_offset(tmp_path):
    folder = tmp_path / "arc_easy"
    folder.mkdir()
    good = _arc_row().encode()
    (folder / "test.jsonl").write_bytes(good + b"\n" + good.replace(b"Q?", b"Q\xff?") + b"\n")
    offset = len(good) + 1 + good.index(b"Q?") + 1
    with pytest.raises(DataError) as err:
        load_mc("arc_easy", "test", tmp_path)
    assert str(err.value) == (
        f"arc_easy/test.jsonl line 2: not UTF-8: byte b'\\xff' at byte offset {offset} of the file "
        f"(byte {good.index(b'Q?') + 2} of the line) is invalid start byte; re-save the file as UTF-8"
    )
