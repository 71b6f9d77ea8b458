"""Solver core: numba kernels over flat arrays (no IL-2, TOML or xarray knowledge here)."""
