"""``python -m arc_lab.quickstart``: the entry point of :mod:`arc_lab.analysis.quickstart`."""

from arc_lab.analysis.quickstart import main

if __name__ == "__main__":
    raise SystemExit(main())
