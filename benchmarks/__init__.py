"""r3d's benchmark suite: ``python benchmarks/run_all.py`` writes benchmarks/results.md."""
