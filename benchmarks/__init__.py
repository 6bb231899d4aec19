"""Benchmark scripts that print tables (docs/benchmarks.md). Run them from the repository root
as modules, e.g. ``python -m benchmarks.bench_backbone``."""
