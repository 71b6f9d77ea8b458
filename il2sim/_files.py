"""Writing outputs safely: a temporary name in the same folder, then an atomic rename.

A process killed at any moment (``kill -9``, out of memory, power cut after the rename)
leaves either the old file, the new complete file, or a hidden temporary (``.NAME.*.tmp``)
that no reader mistakes for a result; never a truncated file under the output's name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from il2sim.errors import ConfigError

__all__ = ["refuse_existing", "replacing", "write_text"]


def refuse_existing(paths, *, overwrite: bool, hint: str = "pass --overwrite to replace it, or choose another --out") -> None:
    """Raise ConfigError naming the first of ``paths`` that exists, unless ``overwrite``."""
    if overwrite:
        return
    for p in paths:
        if Path(p).exists():
            raise ConfigError(f"{p}: exists; {hint}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, make it ``path``.

    The temporary file is flushed to disk before ``os.replace`` moves it over ``path`` in one
    step (same folder, so the same file system). On any error, or KeyboardInterrupt, it is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replacing`."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
