"""``python -m arc_lab --help``: arc_lab's own help page (conf/hydra/help/arc_lab.yaml), not Hydra's default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def help_text() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "arc_lab", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_help_opens_with_the_app_name_not_hydra(help_text):
    assert help_text.startswith("arc_lab: ")
    assert "powered by hydra" not in help_text.lower()
    assert "__main__" not in help_text


def test_help_lists_the_common_commands(help_text):
    for command in (
        "make run",
        "python -m arc_lab -m experiment=quickstart_controls",
        "python -m arc_lab stage=dpo objective=simpo",
        "python -m arc_lab -m experiment=ablation_cpu",
        "python -m arc_lab.report",
        "python -m arc_lab.quickstart",
        "python -m arc_lab.dashboard",
    ):
        assert command in help_text, command


def test_help_offers_every_config_group_and_no_schema(help_text):
    listed = dict(re.findall(r"^(\w+): (.+)$", help_text, re.M))
    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra"}
    assert groups <= set(listed), groups - set(listed)
    for group in groups:  # every preset of the folder is offered
        assert set(listed[group].split(", ")) == {f.stem for f in (ROOT / "conf" / group).glob("*.yaml")}
    assert "schema" not in listed
    assert not any("schema" in options for options in listed.values())
