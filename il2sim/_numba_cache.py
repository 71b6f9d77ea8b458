"""Detect a damaged numba cache of a generated model module and drop it, so numba rebuilds it.

The generated ``.py`` file is checked by :mod:`il2sim._codegen` (key line and digest). numba
caches the compiled machine code next to it, in ``__pycache__/<stem>.<function>-<line>.py311.nbi``
(an index: two pickles) and ``...nbc`` (the code: one pickle), and trusts those files: a
truncated or garbled one (a full disk, a copy cut short, a bad sync of a shared cache) makes the
first call of a kernel raise ``UnpicklingError``/``ValueError`` deep inside numba. Each file is
walked here with :func:`pickletools.genops`, which parses the opcode stream without executing
or importing anything; if one is incomplete, the cache files of that function (its index and
every code file) are removed and numba compiles it afresh (and caches it again) on its first
call. Checked once per module and process, before its first call; a few ms.
"""

from __future__ import annotations

import io
import pickletools
import re
from pathlib import Path

__all__ = ["drop_broken_numba_cache"]

_CHECKED: set[str] = set()
_EXPECTED = {".nbi": 2, ".nbc": 1}  # pickles per file (numba's index: version, then data)
# <module stem>.<function>-<line>.py311.nbi and <module stem>.<function>-<line>.py311.<n>.nbc
_CACHE_FILE = re.compile(r"^(?P<function>.+-\d+)\.py\d+(?:\.\d+)?(?P<suffix>\.nb[ic])$")


def _count_pickles(data: bytes) -> int | None:
    """Number of complete pickles that make up ``data`` exactly, or None if it is not such."""
    buf, n = io.BytesIO(data), 0
    try:
        while buf.tell() < len(data):
            for _ in pickletools.genops(buf):
                pass
            n += 1
    except Exception:  # any malformed opcode stream: ValueError, struct.error, UnicodeDecodeError, ...
        return None
    return n


def drop_broken_numba_cache(module_path: str | Path, *, force: bool = False) -> list[Path]:
    """Remove numba's cache of ``module_path`` if one of its files is damaged; return those files.

    ``force`` checks again even if this process checked the module before.
    """
    module_path = Path(module_path)
    key = str(module_path.resolve())
    if key in _CHECKED and not force:
        return []
    folder = module_path.parent / "__pycache__"
    by_function: dict[str, list[Path]] = {}
    for p in sorted(folder.glob(f"{module_path.stem}.*")):
        m = _CACHE_FILE.match(p.name)
        if m is not None:
            by_function.setdefault(m.group("function"), []).append(p)
    broken = []
    for files in by_function.values():
        bad = []
        for p in files:
            try:
                ok = _count_pickles(p.read_bytes()) == _EXPECTED[p.suffix]
            except OSError:
                ok = False
            if not ok:
                bad.append(p)
        if bad:
            broken += bad
            for p in files:
                p.unlink(missing_ok=True)
    _CHECKED.add(key)
    return broken
