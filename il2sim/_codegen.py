"""Model -> generated numba module, cached on disk by content hash.

The model section of the module (model functions with an analytic Jacobian, sparse LU,
lane versions) is written by :mod:`il2sim._generate`, which needs sympy: it is imported
only when a module is generated, so a process whose model is cached never loads sympy
(a quarter of a second of every warm start).

The module text (header and solver kernels from :mod:`il2sim._solvers.build`) is written to
``<cache_dir>/models/il2sim_model_<key[:20]>.py``. Its model section starts with the line
``# il2sim-model-key: <key> sha256=<digest>``: the full key, and the digest of the rest of
the file, so a truncated or edited file is detected and regenerated. The key hashes what the
code depends on (:attr:`il2sim.model.Model.code_hash`: names, order and equations, not
default values), the il2sim, numba and kernel-template versions, and this generator's source.
numba's own cache sits next to the file in ``__pycache__``, so a second process starts warm.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numba

import il2sim

from ._solvers import build
from .model import Model

__all__ = ["CompiledModel", "compile_model", "default_cache_dir", "cache_key"]

_KEY_PREFIX = "# il2sim-model-key: "
_KEY_LINE = re.compile(r"^# il2sim-model-key: ([0-9a-f]{64}) sha256=([0-9a-f]{64})\n", re.M)
# Changing the generator (or the expression grammar) must invalidate cached modules.
_GENERATOR_HASH = hashlib.sha256(b"".join(
    Path(__file__).with_name(name).read_bytes()
    for name in ("_codegen.py", "_generate.py", "_expr.py", "_expr_sympy.py")
)).hexdigest()


@dataclass(frozen=True)
class CompiledModel:
    """A model with its generated, imported numba module.

    Attributes
    ----------
    model
        The :class:`~il2sim.model.Model` it was generated from.
    module
        The imported module: model functions (``rhs``, ``jac``, ``outputs``, ``initial``,
        ``dose_modifiers``), the ``N_*`` constants and the solver kernels.
    key
        Cache key (hex SHA-256).
    path
        The generated ``.py`` file.
    cold
        True when the source was generated now, False when a cached file was reused.
    codegen_seconds
        Time spent producing (or checking) the file and importing it; numba compiles lazily,
        on the first call of each function, and that time is not included.
    """

    model: Model
    module: ModuleType
    key: str
    path: Path
    cold: bool
    codegen_seconds: float


def default_cache_dir() -> Path:
    """``IL2SIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/il2sim``, else ``~/.cache/il2sim``."""
    env = os.environ.get("IL2SIM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "il2sim"


def cache_key(model: Model) -> str:
    """Hex SHA-256 of everything the generated module depends on."""
    parts = [
        "il2sim-model/1",
        model.code_hash,
        il2sim.__version__,
        numba.__version__,
        build.template_hash(),
        _GENERATOR_HASH,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compile_model(model: Model, *, cache_dir: str | os.PathLike | None = None) -> CompiledModel:
    """Generate (or reuse) and import the numba module for ``model``.

    Parameters
    ----------
    model
        A validated model from :func:`il2sim.model.load_model`.
    cache_dir
        Where ``models/il2sim_model_<key>.py`` lives; default :func:`default_cache_dir`.

    Raises
    ------
    ModelSpecError
        An equation has a constant part that is not a finite real number (e.g. ``log(0)``).
    """
    start = time.perf_counter()
    key = cache_key(model)
    module, path, cold = generated_module(model, key, "il2sim_model", cache_dir)
    return CompiledModel(model, module, key, path, cold, time.perf_counter() - start)


def generated_module(model: Model, key: str, stem: str, cache_dir: str | os.PathLike | None,
                     header: str = build.HEADER_CPU, trailer: str = "") -> tuple[ModuleType, Path, bool]:
    """Import ``models/<stem>_<key[:20]>.py`` from the cache, writing it first if it is missing,
    damaged or from another key (then ``cold`` is True). The first line holds the full key and
    the SHA-256 of the rest, which :func:`_cached_file_ok` checks. numba's own cache beside a
    warm module is checked too (once per process) and dropped if damaged, so it is rebuilt."""
    from ._numba_cache import drop_broken_numba_cache

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "models" / f"{stem}_{key[:20]}.py"
    cold = not _cached_file_ok(path, key)
    if cold:
        from ._generate import generate_source

        body = generate_source(model)
        digest = hashlib.sha256(build.module_source(body, header, trailer).encode()).hexdigest()
        build.write_module(path, f"{_KEY_PREFIX}{key} sha256={digest}\n" + body, header=header, trailer=trailer)
    else:
        drop_broken_numba_cache(path)
    return build.import_module(path), path, cold


def _cached_file_ok(path: Path, key: str) -> bool:
    """True if ``path`` holds a complete module generated for ``key``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    match = _KEY_LINE.search(text)
    if match is None or match.group(1) != key:
        return False
    rest = text[: match.start()] + text[match.end():]
    return hashlib.sha256(rest.encode()).hexdigest() == match.group(2)
