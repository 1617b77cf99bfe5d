"""The run machinery: planning a chain, building objects from a RunConfig, running it through the stage and
eval caches, and the run folder (provenance, manifests).

Imports nothing: each module loads on first use."""
