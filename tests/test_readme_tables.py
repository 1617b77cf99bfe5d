"""Every results table in the README and in ``experiments/*/README.md`` is rendered from committed files.

A table sits between ``<!-- table: python -m arc_lab.report <study> --seed-table [options] -->`` and
``<!-- /table -->``; this test runs that command (in process) on the committed study folder and fails when
the text between the markers differs from its output. Numbers cannot drift from their data.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from arc_lab.analysis import report

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- table: (?P<cmd>[^\n]*?) -->\n(?P<body>.*?)\n<!-- /table -->", re.S)
DOCS = [REPO / "README.md", *sorted((REPO / "experiments").glob("*/README.md"))]


def _blocks() -> list[tuple[str, str, str]]:
    out = []
    for doc in DOCS:
        for m in BLOCK.finditer(doc.read_text()):
            out.append((doc.relative_to(REPO).as_posix(), m["cmd"], m["body"]))
    return out


def test_the_readme_has_rendered_tables():
    docs = {doc for doc, _, _ in _blocks()}
    assert "README.md" in docs, "README.md holds no <!-- table: ... --> block"


@pytest.mark.parametrize(
    "doc,cmd,body", _blocks(), ids=lambda v: v if isinstance(v, str) and "/" not in v else None
)
def test_table_equals_what_its_command_renders_from_committed_files(doc, cmd, body, monkeypatch):
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "arc_lab.report"] and "--seed-table" in argv, cmd
    monkeypatch.chdir(REPO)
    assert (REPO / argv[3]).is_dir(), f"{doc}: {argv[3]} is not committed"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert report.main(argv[3:]) == 0
    assert body.strip() == out.getvalue().strip(), f"{doc}: the table under `{cmd}` differs from its data"
