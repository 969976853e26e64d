"""Benchmarks: commands anyone can rerun (`scf bench ...`); results go in docs/benchmarks.md."""
