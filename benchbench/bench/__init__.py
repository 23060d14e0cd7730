"""Benchmarks of the data path, runnable as modules: `python -m benchbench.bench.loader`, `...subsets`."""
