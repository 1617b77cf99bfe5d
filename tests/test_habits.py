"""Repository habits: what pyproject.toml packages exists, CI runs the tests and the lint, and the
pre-commit ruff is the ruff the dev venv installs."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_names_only_what_exists():
    tool = pyproject()["tool"]["setuptools"]
    for pattern in tool["packages"]["find"]["include"]:
        top = pattern.rstrip("*").rstrip(".")
        assert (ROOT / top / "__init__.py").is_file(), f"packages.find includes {pattern!r}: no such package"
    for package, files in tool.get("package-data", {}).items():
        for name in files:
            assert list((ROOT / package).glob(name)), f"package-data {package}: {name!r} matches no file"


def test_pre_commit_ruff_is_the_dev_ruff():
    dev = pyproject()["project"]["optional-dependencies"]["dev"]
    pins = [re.fullmatch(r"ruff==(\S+)", d) for d in dev]
    pinned = [m.group(1) for m in pins if m]
    assert len(pinned) == 1, f"the dev extra should pin ruff exactly, got {dev}"
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    assert "https://github.com/astral-sh/ruff-pre-commit" in config
    assert re.search(r"^\s*rev:\s*v(\S+)\s*$", config, re.M).group(1) == pinned[0]
    assert {"ruff-check", "ruff-format"} <= set(re.findall(r"- id:\s*(\S+)", config))


@pytest.mark.parametrize(("test_rc", "lint_rc"), [(0, 0), (1, 0), (0, 1), (2, 2)])
def test_ci_runs_tests_and_lint_and_fails_if_either_fails(tmp_path, test_rc, lint_rc):
    # .ci/run in a copy of the layout, with a stand-in `make` that records its targets and exits as told.
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "make"
    fake.write_text(
        '#!/usr/bin/env bash\necho "$1" >> "$CALLS"\n'
        'case "$1" in test) exit "$TEST_RC";; lint) exit "$LINT_RC";; *) exit 99;; esac\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        CALLS=str(calls),
        TEST_RC=str(test_rc),
        LINT_RC=str(lint_rc),
    )
    proc = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert calls.read_text().split() == ["test", "lint"]  # lint runs even after failed tests
    assert (proc.returncode == 0) == (test_rc == 0 and lint_rc == 0), proc.stdout + proc.stderr


def test_no_file_names_a_machine_path_or_a_document_outside_the_repository():
    """Nothing committed names an absolute path of the machine it was written on (the work, root or home
    folders: see ``bad`` below) or points at a document outside the repository (the shared docs folder);
    the shared data folder is the documented optional data location and stays allowed."""
    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    bad = re.compile(r"(?<![\w.])/(work|root|home/\w+)/|\.\./shared/docs")
    hits = []
    for rel in files:
        path = root / rel
        if path.suffix in {".gz", ".png"} or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if bad.search(line) and rel != "tests/test_habits.py":
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_lint_pins_ruff_as_dev_and_mypy_exactly_and_no_torch():
    extras = pyproject()["project"]["optional-dependencies"]
    lint = extras["lint"]
    assert [d for d in lint if d.startswith("ruff")] == [d for d in extras["dev"] if d.startswith("ruff")]
    assert any(re.fullmatch(r"mypy==\S+", d) for d in lint), lint
    assert not [d for d in lint if d.split("=")[0].strip("<>~!") in {"torch", "transformers", "deepspeed"}]
    makefile = (ROOT / "Makefile").read_text()
    lint_recipe = makefile.split("\nlint:")[1].split("\n\n")[0]
    assert "$(STAMP)" not in lint_recipe.splitlines()[0] and "mypy" in lint_recipe  # not the torch venv


def test_phony_lists_only_real_targets():
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", makefile, re.M))
    assert set(phony) <= targets, set(phony) - targets
