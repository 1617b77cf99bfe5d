"""``python -m arc_lab.export``: the entry point of :mod:`arc_lab.analysis.export`."""

from arc_lab.analysis.export import main

if __name__ == "__main__":
    raise SystemExit(main())
