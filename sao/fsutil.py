"""Files appear under their final name only when complete: write to a temporary name in the
same folder, then rename (atomic on POSIX). A failure removes the temporary file."""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, suffix: str = ".part") -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed to ``dest``."""
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def safe_join(root: str | os.PathLike, relative: str) -> pathlib.Path:
    """``root / relative`` for a path taken from metadata, refused when it would leave ``root``
    (absolute paths, '..' components, symlinks pointing out)."""
    base = pathlib.Path(root).resolve()
    p = (base / relative).resolve()
    if pathlib.PurePath(relative).is_absolute() or (p != base and base not in p.parents):
        raise ValueError(f"{relative!r}: path from metadata escapes {base}")
    return p
