"""OHLCV bars on event time: numba kernels (kernels.py), the per-partition book (core.py), the agent."""
