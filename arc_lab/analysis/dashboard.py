"""W&B dashboards as code: one command builds the saved workspace (and optionally a report) of a sweep.

Usage::

    python -m arc_lab.dashboard --entity E --project P [--group G] [--runs DIR] [--task T ...]
        [--stage S ...] [--name NAME] [--report] [--dry-run]

Built with W&B's own ``wandb-workspaces`` (the ``wandb`` extra: ``pip install 'arc_lab[wandb]'``):

* per task, a scatter of ``eval/<task>/acc`` (x) against ``eval/<task>/acc_norm`` (y); the runset is
  grouped by ``objective.name``, so every objective has its colour (points off the diagonal's ordering
  are where the two metrics disagree);
* parallel coordinates over ``objective.name``, ``objective.beta``, ``stage.optim.lr`` and each task's
  acc and acc_norm;
* the runs table: the runset's pinned columns, the same keys;
* per stage of the chain (``cpt``, ``cpt→dpo``, ...), its training curves (``<stage>/loss``, ``lr``,
  ``grad_norm`` and the objective's own metrics such as ``accuracy``, ``rewards/margin``, ``kl``). A
  stage trained with a non-default objective is labelled ``cpt→dpo[kto]``; the labels of one stage
  share its panels (one line per run), so an objective sweep compares its curves in one plot.

The panels use the names arc_lab's W&B logger writes (:mod:`arc_lab.train.loggers`; the run logger from
:func:`arc_lab.run.build.cell_logger`, stage prefixes from :class:`arc_lab.run.stage.PrefixLogger`).
Which tasks and stages a sweep has, and which keys it logged, are read from its runs: the run files
under ``--runs`` (W&B keeps a ``run-<id>.wandb`` file in the run folder for online and offline runs
alike, read by :mod:`arc_lab.analysis.wandb_offline`), or else the group's runs through the W&B API. A panel key
that no run logged is an error naming the key, so a renamed metric fails here instead of leaving an
empty panel. ``--dry-run`` prints the workspace as JSON (the wire model W&B would receive) and, with
``--report``, the report's outline (its wire model needs a W&B login to build), and saves nothing.

Config keys: arc_lab logs its config flat (``objective.beta`` is one key), which W&B stores as
``{"objective.beta": {"value": ...}}``; ``wandb-workspaces`` assumes a nested config
(``objective.value.beta``), so config accessors are written as ``config:<key>.value`` here
(:class:`FlatConfigColumn`) and the grouping key as ``objective.name.value``.

Public API: :class:`LoggedKeys`, :class:`Plan`, :func:`local_keys`, :func:`plan_dashboard`,
:func:`build_workspace`, :func:`build_report`, :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_lab.analysis.wandb_offline import OfflineRunError, read_offline_run

#: config columns of the parallel coordinates and the runs table; the first two must have been logged
CONFIG_COLUMNS = ("objective.name", "stage.optim.lr", "objective.beta")
REQUIRED_CONFIG = ("objective.name", "stage.optim.lr")
#: the runset groups by this config key: one colour per objective
GROUP_BY = "objective.name"
#: curves the shared loop logs for every stage, then the objective metrics drawn when logged
CURVES = ("loss", "lr", "grad_norm")
OPTIONAL_CURVES = ("accuracy", "rewards/margin", "kl", "nll", "tokens_per_s")
X_AXIS = "Step"  # W&B's step: arc_lab logs every stage of a chain at increasing steps


class DashboardError(ValueError):
    """The runs lack a key a panel needs, or there are no runs to read; the message names it."""


def eval_keys(task: str) -> tuple[str, str]:
    """The summary keys of a task's final evaluation, as the pipeline logs them."""
    return f"eval/{task}/acc", f"eval/{task}/acc_norm"


@dataclass
class LoggedKeys:
    """The union of the keys a sweep's runs logged: config, summary and history."""

    config: set[str] = field(default_factory=set)
    summary: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)
    runs: int = 0

    def add(self, config: Iterable[str], summary: Iterable[str], history: Iterable[str]) -> None:
        self.config.update(config)
        self.summary.update(summary)
        self.history.update(history)
        self.runs += 1

    def tasks(self) -> list[str]:
        """Tasks with both ``eval/<task>/acc`` and ``eval/<task>/acc_norm`` in the summary."""
        names = {k.split("/")[1] for k in self.summary if k.startswith("eval/") and k.count("/") == 2}
        return sorted(t for t in names if set(eval_keys(t)) <= self.summary)

    def stages(self) -> list[str]:
        """Stage labels with a training curve (``<label>/loss`` in the history)."""
        return sorted(
            k.removesuffix("/loss") for k in self.history if k.count("/") == 1 and k.endswith("/loss")
        )


def local_keys(root: str | Path, group: str | None = None) -> LoggedKeys:
    """Keys of the W&B run files under ``root`` (of ``group`` only, when given).

    Raises:
        DashboardError: no run file under ``root`` (of that group), or one is not a W&B run file.
    """
    keys = LoggedKeys()
    files = sorted(Path(root).rglob("*run-*/run-*.wandb"))
    for path in files:
        try:
            run = read_offline_run(path)
        except OfflineRunError as e:
            raise DashboardError(str(e)) from e
        if group is None or run.group == group:
            history = {k for row in run.history for k in row if not k.startswith("_")}
            keys.add(run.config, run.summary, history)
    if not keys.runs:
        where = f" of group {group!r}" if group else ""
        raise DashboardError(f"--runs {root}: no W&B run file (run-*/run-<id>.wandb){where} under it")
    return keys


def api_keys(entity: str, project: str, group: str | None) -> LoggedKeys:  # pragma: no cover - network
    """Keys of the group's runs through the W&B public API (needs a login and the network)."""
    import wandb

    keys = LoggedKeys()
    try:
        api = wandb.Api()
        # lazy=False: the full run fragment, which carries historyKeys ({"keys": {...}, "lastStep": n})
        runs = api.runs(f"{entity}/{project}", filters={"group": group} if group else None, lazy=False)
    except wandb.errors.UsageError as e:  # no API key: a user fault, one line
        raise DashboardError(
            f"the W&B API needs a login ({str(e).splitlines()[0]}): run `wandb login` (or set WANDB_API_KEY), "
            "or pass --runs <sweep dir> to read the run files the cells left locally"
        ) from None
    for run in runs:
        history = run.history_keys or {}
        history = json.loads(history) if isinstance(history, str) else history
        keys.add(
            run.config, run.summary.keys(), (k for k in history.get("keys", {}) if not k.startswith("_"))
        )
    if not keys.runs:
        raise DashboardError(f"no runs in {entity}/{project}" + (f" with group {group!r}" if group else ""))
    return keys


@dataclass
class Plan:
    """What the dashboard shows, every key checked against :class:`LoggedKeys`."""

    tasks: list[str]
    config_columns: list[str]
    curves: dict[str, list[tuple[str, list[str]]]]  # stage -> (metric, the history keys of its panel)


def plan_dashboard(
    keys: LoggedKeys, tasks: Sequence[str] | None = None, stages: Sequence[str] | None = None
) -> Plan:
    """Choose tasks, config columns and curves; every key a panel will read must have been logged.

    Args:
        keys: what the sweep's runs logged.
        tasks: tasks to plot (default: every task with acc and acc_norm in the summary).
        stages: stage labels whose curves to plot (default: every label with a ``<label>/loss`` curve).

    Raises:
        DashboardError: a required key is missing; the message lists the missing keys.
    """
    tasks = list(tasks) if tasks else keys.tasks()
    stages = list(stages) if stages else keys.stages()
    missing = [k for t in tasks for k in eval_keys(t) if k not in keys.summary]
    missing += [f"config {k}" for k in REQUIRED_CONFIG if k not in keys.config]
    missing += [f"history {s}/{m}" for s in stages for m in CURVES if f"{s}/{m}" not in keys.history]
    if missing:
        raise DashboardError(f"the runs ({keys.runs}) did not log {', '.join(missing)}")
    if not tasks:
        raise DashboardError(f"the runs ({keys.runs}) logged no eval/<task>/acc and eval/<task>/acc_norm")
    curves: dict[str, list[tuple[str, list[str]]]] = {}
    for family in dict.fromkeys(stage_family(s) for s in stages):
        labels = [s for s in stages if stage_family(s) == family]
        panels = [
            (m, [f"{s}/{m}" for s in labels if f"{s}/{m}" in keys.history]) for m in CURVES + OPTIONAL_CURVES
        ]
        curves[family] = [(m, ys) for m, ys in panels if ys]
    return Plan(tasks, [k for k in CONFIG_COLUMNS if k in keys.config], curves)


def stage_family(label: str) -> str:
    """The stage a label belongs to: ``cpt→dpo[kto]`` (a non-default objective) -> ``cpt→dpo``."""
    return label.split("[", 1)[0]


def _wr():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DashboardError(
            "python -m arc_lab.dashboard needs wandb-workspaces: pip install 'arc_lab[wandb]'"
        ) from e
    return wr, ws


def _flat_config_column():
    """A parallel-coordinates column whose config accessor is ``config:<flat key>.value``."""
    wr, _ = _wr()

    class FlatConfigColumn(wr.ParallelCoordinatesPlotColumn):
        def _to_model(self):
            model = super()._to_model()
            if isinstance(self.metric, wr.Config):
                model.accessor = f"config:{self.metric.name}.value"
            return model

    return FlatConfigColumn


def _panels(plan: Plan) -> list[tuple[str, list[Any]]]:
    """(section name, panels): comparison first, then one section per stage's curves."""
    wr, _ = _wr()
    column = _flat_config_column()
    scatters = [
        wr.ScatterPlot(
            title=f"{task}: acc vs acc_norm (colour: objective)",
            x=wr.SummaryMetric(eval_keys(task)[0]),
            y=wr.SummaryMetric(eval_keys(task)[1]),
        )
        for task in plan.tasks
    ]
    columns = [column(metric=wr.Config(k)) for k in plan.config_columns]
    columns += [column(metric=wr.SummaryMetric(k)) for t in plan.tasks for k in eval_keys(t)]
    parallel = wr.ParallelCoordinatesPlot(title="objective, β, lr → acc, acc_norm", columns=columns)
    sections = [("acc vs acc_norm", [*scatters, parallel])]
    for stage, panels in plan.curves.items():
        plots = [wr.LinePlot(title=f"{stage}/{m}", x=X_AXIS, y=ys) for m, ys in panels]
        sections.append((f"training: {stage}", plots))
    return sections


def table_columns(plan: Plan) -> list[str]:
    """The runs table's pinned columns (``config:<key>``, ``summary:<key>``)."""
    return [f"config:{k}" for k in plan.config_columns] + [
        f"summary:{k}" for t in plan.tasks for k in eval_keys(t)
    ]


def build_workspace(entity: str, project: str, group: str | None, plan: Plan, name: str) -> Any:
    """The workspace (a ``wandb_workspaces.workspaces.Workspace``, not saved)."""
    wr, ws = _wr()
    from wandb_workspaces import expr

    sections = [ws.Section(name=n, panels=p, is_open=True) for n, p in _panels(plan)]
    runset = ws.RunsetSettings(
        filters=[expr.Metric("Group") == group] if group else [],
        groupby=[expr.Config(f"{GROUP_BY}.value")],
        pinned_columns=table_columns(plan),
    )
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections, runset_settings=runset)


def build_report(entity: str, project: str, group: str | None, plan: Plan, title: str) -> Any:
    """The report (a ``wandb_workspaces.reports.v2.Report``, not saved): the same panels over the group."""
    wr, _ = _wr()
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=group or project,
        filters=f"Group = '{group}'" if group else "",
        groupby=[f"config.{GROUP_BY}.value"],
    )
    blocks: list[Any] = [wr.P(f"arc_lab sweep {group or project}: built by python -m arc_lab.dashboard.")]
    for name, panels in _panels(plan):
        blocks += [wr.H2(name), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(entity=entity, project=project, title=title, blocks=blocks)


def to_json(workspace: Any) -> dict[str, Any]:
    """The wire model W&B would receive for a workspace, as JSON data (built offline)."""
    return json.loads(workspace._to_model().model_dump_json(by_alias=True))


def report_outline(report: Any) -> dict[str, Any]:
    """Title, runset and panels of a report. Its wire model cannot be built offline: wandb-workspaces
    looks the project up on the server (a login) while serialising a runset."""
    blocks = []
    for block in report.blocks:
        if hasattr(block, "panels"):
            runsets = [{"filters": rs.filters, "groupby": list(rs.groupby)} for rs in block.runsets]
            blocks.append({"runsets": runsets, "panels": [repr(p) for p in block.panels]})
        else:
            blocks.append({type(block).__name__: str(getattr(block, "text", ""))})
    return {"title": report.title, "blocks": blocks}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m arc_lab.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", required=True, help="W&B project (arc_lab's logger.project)")
    parser.add_argument("--group", help="the sweep's group (logger.group; default: the experiment name)")
    parser.add_argument("--runs", help="read the logged keys from the W&B run files under this folder")
    parser.add_argument("--task", action="append", help="task to plot (repeatable; default: all logged)")
    parser.add_argument("--stage", action="append", help="stage label to plot (repeatable; default: all)")
    parser.add_argument("--name", help="workspace and report name (default: arc_lab <group>)")
    parser.add_argument("--report", action="store_true", help="also build a report with the same panels")
    parser.add_argument("--dry-run", action="store_true", help="print the JSON, save nothing")
    args = parser.parse_args(argv)
    name = args.name or f"arc_lab {args.group or args.project}"
    try:
        keys = (
            local_keys(args.runs, args.group)
            if args.runs
            else api_keys(args.entity, args.project, args.group)
        )
        plan = plan_dashboard(keys, args.task, args.stage)
        workspace = build_workspace(args.entity, args.project, args.group, plan, name)
        report = build_report(args.entity, args.project, args.group, plan, name) if args.report else None
    except DashboardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        out = {"workspace": to_json(workspace)} | ({"report": report_outline(report)} if report else {})
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    workspace.save()
    print(f"workspace: {workspace.url}")
    if report is not None:
        report.save()
        print(f"report: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
