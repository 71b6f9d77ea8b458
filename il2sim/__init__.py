"""il2sim: simulation engine for subcutaneous interleukin-2 immunotherapy."""

__version__ = "0.1.0"
