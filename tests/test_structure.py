"""The layer above the building blocks keeps its shape: no import circles, one module reads the run
config, every schema field is documented, and a new stage kind is one table entry (plus its preset)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "arc_lab"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _owner(name: str) -> str | None:
    """The arc_lab module an import of ``name`` executes (``arc_lab.eval.run_eval`` -> ``arc_lab.eval``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines under ``if TYPE_CHECKING:`` (imports for annotations only, never executed)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        ):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the arc_lab modules it imports, at module level or inside functions (a lazy import back up
    the layering is still a circle)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        edges = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {o for t in targets if t.startswith("arc_lab") and (o := _owner(t)) and o != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_finds_a_circle_when_there_is_one():
    graph = import_graph()
    graph["arc_lab.dist"] = graph["arc_lab.dist"] | {"arc_lab.run.pipeline"}  # pipeline imports dist
    assert any({"arc_lab.dist", "arc_lab.run.pipeline"} <= set(c) for c in cycles(graph))


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_only_the_entry_point_and_the_planner_see_the_raw_hydra_config():
    """DictConfig travels from Hydra to plan_chain, which returns validated RunConfigs; the modules that
    build and run take those (or flat arguments)."""
    allowed = {
        "arc_lab.__main__",
        "arc_lab.run.rundir",  # the Hydra callback that checks hydra.run.dir before the app starts
        "arc_lab.config",
        "arc_lab.run.plan",
        "arc_lab.run.runinfo",  # write_provenance/config_hash also take plain containers
        "arc_lab.train.loggers",  # config_run_id flattens any mapping
    }
    seen = {name for name, path in MODULES.items() if "DictConfig" in path.read_text()}
    assert seen <= allowed, sorted(seen - allowed)


def test_stage_and_loop_take_no_config_object():
    import inspect

    from arc_lab.run.stage import train_stage
    from arc_lab.train.loop import train

    for fn in (train_stage, train):
        for p in inspect.signature(fn).parameters.values():
            assert "RunConfig" not in str(p.annotation) and "DictConfig" not in str(p.annotation), (fn, p)


def test_every_schema_field_has_a_doc_comment():
    """A ``#:`` comment right above each field of every config dataclass (what --cfg job readers and
    DESIGN.md point to): the Hydra schemas and the training settings they register."""
    missing = []
    for path in (PKG / "config.py", PKG / "train" / "args.py"):
        src = path.read_text()
        lines = src.splitlines()
        for node in ast.parse(src).body:
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and not lines[stmt.lineno - 2].strip().startswith(
                        "#:"
                    ):
                        missing.append(f"{path.name}:{node.name}.{stmt.target.id}")
    assert missing == []


def test_a_new_stage_kind_is_one_entry(monkeypatch):
    """A kind added to STAGE_KINDS alone is validated, hashed on its own data fields, labelled and counted
    as trained by the report, with no other module edited."""
    from arc_lab import stage_kinds
    from arc_lab.analysis.report import config_label
    from arc_lab.config import (  # noqa: F401  (validation path)
        ConfigError,
        DataConfig,
        EvalConfig,
        ModelConfig,
        RunConfig,
        StageConfig,
        check_objective,
        to_run_config,
    )
    from arc_lab.objectives import OBJECTIVES
    from arc_lab.run.plan import ModelRef, stage_config_key, stage_label

    kind = stage_kinds.StageKind(
        name="pref",
        inputs=("pair",),
        default_objective="simpo",
        data_fields=("train_sources", "hub"),
        source_field="train_sources",
        trains_on="questions",
        description="test kind",
    )
    monkeypatch.setitem(stage_kinds.STAGE_KINDS, "pref", kind)
    tiny = dict(
        hidden_size=8,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    model = ModelConfig(name="m", source="random", tiny=tiny)
    stage = StageConfig(name="pref")
    assert check_objective("pref", {"name": "simpo"}, OBJECTIVES)["name"] == "simpo"
    with pytest.raises(ConfigError, match="stage=pref builds"):
        check_objective("pref", {"name": "clm"}, OBJECTIVES)
    run = RunConfig(
        model=model, data=DataConfig(name="d"), stage=stage, objective={"name": "simpo"}, eval=EvalConfig()
    )
    key = stage_config_key(run, "base:x")
    assert set(key["data"]) == {"train_sources", "hub"}
    assert stage_label(run, ModelRef("base:x", "base")) == "pref"
    assert (
        stage_label(dataclasses.replace(run, objective={"name": "dpo"}), ModelRef("k", "cpt"))
        == "cpt→pref[dpo]"
    )
    assert (
        config_label({"stage": {"name": "dpo", "init": "pref"}, "objective": {"name": "dpo"}}) == "pref→dpo"
    )
    with pytest.raises(ConfigError, match="stage='nope'"):
        StageConfig(name="nope")


def test_the_training_loop_and_the_evaluator_import_neither_hydra_nor_omegaconf():
    """The training settings live in arc_lab/train/args.py as plain dataclasses (config.py registers them
    with Hydra): importing the loop, the stage runner or the evaluator loads no config machinery."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import arc_lab.train.loop, arc_lab.train.setup, arc_lab.train.lora, arc_lab.train.args, arc_lab.run.stage\n"
        "import arc_lab.eval.runner, arc_lab.eval.ours, arc_lab.eval.engine\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_config_registers_the_training_dataclasses_without_redefining_them():
    from arc_lab import config
    from arc_lab.train import args

    assert config.OptimConfig is args.OptimConfig and config.LoraConfig is args.LoraConfig
    assert "class OptimConfig" not in Path(config.__file__).read_text()


def test_design_lists_exactly_the_config_readers():
    """DESIGN.md's "Config readers" sentence names every module that imports arc_lab.config (lazy imports
    included), and no other."""
    import re

    root = Path(__file__).resolve().parents[1]
    readers = set()
    for path in (root / "arc_lab").rglob("*.py"):
        if path.name == "config.py" and path.parent.name == "arc_lab":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if "arc_lab.config" in names:
                readers.add(path.stem)
    design = (root / "DESIGN.md").read_text()
    listed = re.search(r"Config readers \(the\s+modules that import `arc_lab.config`\):([^.]*)\.", design)
    assert listed, "DESIGN.md lost its 'Config readers' sentence"
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == readers
