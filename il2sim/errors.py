"""Exception types raised by il2sim for bad input or failed runs.

Every message names the file (or object), the field and what was expected, so a
user can fix the input without reading a traceback.
"""

from __future__ import annotations

__all__ = [
    "Il2simError",
    "ModelSpecError",
    "ExpressionError",
    "RegimenError",
    "ConfigError",
    "SolverError",
]


class Il2simError(Exception):
    """Base class of every error il2sim raises on purpose."""


class ModelSpecError(Il2simError, ValueError):
    """A model file (or a composition of model files) is invalid.

    ``problems`` holds every problem found, one line each; ``str(err)`` lists them all.
    """

    def __init__(self, problems: list[str] | str, header: str = "invalid model"):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{header}: {len(self.problems)} problem(s)\n{lines}")


class ExpressionError(ModelSpecError):
    """An expression in a model or config file is not in il2sim's safe grammar."""


class RegimenError(Il2simError, ValueError):
    """A dosing regimen or NONMEM-style event record is invalid."""


class ConfigError(Il2simError, ValueError):
    """A scenario config file is invalid."""


class SolverError(Il2simError, RuntimeError):
    """Integration failed and the caller asked for failures to raise (``throw=True``)."""
