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


def is_remote(url: str | os.PathLike) -> bool:
    """An fsspec URL of another filesystem than this machine's (``s3://``, ``gs://``, ``memory://``)."""
    s = str(url)
    return "://" in s and not s.startswith("file://")


def local_part(url: str | os.PathLike) -> str:
    """A local path or ``file://`` URL as a path (``file:///data/x`` -> ``/data/x``), never a folder named ``file:``."""
    s = str(url)
    return s[len("file://"):] if s.startswith("file://") else s


@contextlib.contextmanager
def output_folder(url: str | os.PathLike, storage_options: dict | None = None, *,
                  prune: bool = False) -> Iterator[pathlib.Path]:
    """A local folder to write an output into. For a path or ``file://`` URL it is that folder; for
    any other fsspec URL, a temporary folder whose files are uploaded to URL when the block ends
    without error, each under a temporary name and then moved, so a reader never sees a half file.
    ``prune``: files an earlier upload left in the uploaded top-level folders are removed after."""
    if not is_remote(url):
        folder = pathlib.Path(local_part(url)).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    import fsspec
    fs, root = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix=".sao-out.") as tmp:
        yield pathlib.Path(tmp)
        uploaded = set()
        for f in sorted(p for p in pathlib.Path(tmp).rglob("*") if p.is_file()):
            dest = f"{root}/{f.relative_to(tmp).as_posix()}"
            folder, fname = dest.rsplit("/", 1)
            fs.makedirs(folder, exist_ok=True)
            fs.put_file(str(f), f"{folder}/.{fname}.part")
            fs.mv(f"{folder}/.{fname}.part", dest)
            uploaded.add(fs._strip_protocol(dest))
        if prune:
            for top in (p for p in pathlib.Path(tmp).iterdir() if p.is_dir()):
                for old in fs.find(f"{root}/{top.name}"):
                    if fs._strip_protocol(old) not in uploaded:
                        fs.rm_file(old)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class UnsafePathError(ValueError):
    """A value from metadata (a type, an id, a name, a stored path) that cannot safely become a path."""


# What soundfile (bundled libsndfile) decodes, as Freesound spells its ``type`` field. m4a/AAC is
# not decodable, so an original of that type is refused rather than stored unreadable.
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "aiff", "aif")
MAX_NAME_CHARS = 128


def audio_ext(value: object, *, what: str = "type") -> str:
    """A file extension from an exact allow-list (no case folding, no prefix or tail match)."""
    if not isinstance(value, str) or value not in AUDIO_EXTENSIONS:
        raise UnsafePathError(f"{what} {value!r}: not an audio type we store (one of {', '.join(AUDIO_EXTENSIONS)})")
    return value


def safe_name(value: object, *, what: str = "name", max_chars: int = MAX_NAME_CHARS) -> str:
    """One path component from an external value: a non-empty string of at most ``max_chars``
    characters, without separators, NUL or control characters, '..' or a leading dot (hidden
    files and our own temporaries start with one)."""
    problem = None
    if not isinstance(value, str):
        problem = f"is a {type(value).__name__}, not a string"
    elif not value:
        problem = "is empty"
    elif len(value) > max_chars:
        problem = f"is longer than {max_chars} characters"
    elif "/" in value or "\\" in value:
        problem = "contains a path separator"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problem = "contains NUL or a control character"
    elif value.startswith("."):
        problem = "starts with '.'"
    elif ".." in value:
        problem = "contains '..'"
    if problem:
        raise UnsafePathError(f"{what} {value!r} {problem}: it cannot be a file name")
    return value


def safe_join(root: str | os.PathLike, *relative: str, what: str = "path") -> pathlib.Path:
    """``root / relative...`` for paths built from external values (metadata, the catalogue, a
    prompts file, a command-line name): the one place such paths are made. Each part may hold
    several '/'-separated components, each checked by ``safe_name``; absolute paths and '..'
    are refused, and the result must still lie under ``root`` once symlinks are resolved.
    Returns the joined path (not resolved, so relative paths to ``root`` stay meaningful)."""
    components: list[str] = []
    for part in relative:
        if not isinstance(part, str):
            raise UnsafePathError(f"{what} {part!r}: is a {type(part).__name__}, not a string")
        if part.startswith("/") or pathlib.PurePath(part).is_absolute():
            raise UnsafePathError(f"{what} {part!r}: absolute path escapes {root}")
        if ".." in part.split("/"):
            raise UnsafePathError(f"{what} {part!r}: '..' escapes {root}")
        names = [c for c in part.split("/") if c not in ("", ".")]
        if not names:
            raise UnsafePathError(f"{what} {part!r}: is empty")
        components += [safe_name(c, what=f"{what} {part!r}: component") for c in names]
    if not components:
        raise UnsafePathError(f"{what}: nothing to join to {root}")
    joined = pathlib.Path(root).joinpath(*components)
    base = pathlib.Path(root).resolve()
    real = joined.resolve()
    if real == base or base not in real.parents:
        raise UnsafePathError(f"{what} {'/'.join(components)!r}: escapes {base} (through a symlink)")
    return joined
