"""``python -m arc_lab.report``: the entry point of :mod:`arc_lab.analysis.report`."""

from arc_lab.analysis.report import main

if __name__ == "__main__":
    raise SystemExit(main())
