"""The analysis tools: run folders and their samples, statistics, seed-aware reports, the quickstart table,
exports of studies, W&B dashboards.

Imports nothing: each module loads on first use."""
