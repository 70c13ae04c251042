"""Benchmarks: `python -m benchmarks <scenario>` measures our code against a naive peer."""
