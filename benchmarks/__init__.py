"""Benchmarks and the compile-only cost report (see BENCHMARKS.md for commands and results)."""
