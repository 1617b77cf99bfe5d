"""``python -m arc_lab.dashboard``: the entry point of :mod:`arc_lab.analysis.dashboard`."""

from arc_lab.analysis.dashboard import main

if __name__ == "__main__":
    raise SystemExit(main())
