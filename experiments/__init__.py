"""Experiment scripts, run from the repository root as modules
(`python -m experiments.clip.run ...`), so that they import `jaxssl` and
each other (`experiments.common`) as packages."""
