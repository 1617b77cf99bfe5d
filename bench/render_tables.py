"""Re-render every ``<!-- table: python -m arc_lab.report ... -->`` block of README.md and
``experiments/*/README.md`` from the committed study folders (what ``tests/test_readme_tables.py`` checks).

    python bench/render_tables.py          # rewrite the blocks in place; prints which changed
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (?P<cmd>[^\n]*?) -->\n)(?P<body>.*?)(\n<!-- /table -->)", re.S)


def render(cmd: str) -> str:
    from arc_lab.analysis import report

    argv = shlex.split(cmd)
    if argv[:3] != ["python", "-m", "arc_lab.report"] or "--seed-table" not in argv:
        raise SystemExit(f"not a table command: {cmd}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if report.main(argv[3:]) != 0:
            raise SystemExit(f"failed: {cmd}")
    return out.getvalue().strip()


def main() -> int:
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)  # the commands name study folders relative to the repository
    for doc in [REPO / "README.md", *sorted((REPO / "experiments").glob("*/README.md"))]:
        text = doc.read_text()
        new = BLOCK.sub(lambda m: m[1] + render(m["cmd"]) + m[4], text)
        if new != text:
            doc.write_text(new)
            print(f"re-rendered {doc.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
