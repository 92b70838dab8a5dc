"""The weights lock file (``weights.lock.json``) and what is in a models folder: which files are
present and verified, which stages would run calibrated, and the config settings a fetched file fills.
No network here: config loading reads this module, the downloads live in sao.weights.fetch."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Iterator

from ..fsutil import atomic_write_text, safe_join
from . import table
from .table import WeightEntry, WeightFile

log = logging.getLogger(__name__)

LOCK_NAME = "weights.lock.json"
CHUNK = 1 << 20

class WeightsError(ValueError):
    """A fetch or check that failed; the message names the file and the reason (never a token)."""


def default_models_dir(cfg) -> pathlib.Path:
    """``<[paths].data_dir>/models``: the config has no setting of its own for it (--dir overrides)."""
    return cfg.path(cfg.paths.data_dir) / "models"


def digest_file(path: str | os.PathLike, kind: str) -> str:
    h = hashlib.new(kind)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _flock(path: pathlib.Path, *, wait: bool = True, what: str = "") -> Iterator[None]:
    """An exclusive fcntl lock on PATH (created if needed) for the block; without ``wait``, a lock held by
    another process is an error instead of a wait."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WeightsError(f"{what}: another `sao weights fetch` is downloading it; try again when it "
                                   "is done") from None
            raise
        yield
    finally:
        os.close(fd)


# -- the lock file ---------------------------------------------------------------------------------

def read_lock(models_dir: str | os.PathLike) -> dict[str, dict]:
    """The lock file's records by key ("<entry>/<file>"); {} when there is none. A record whose file
    would leave the models folder, or whose digest is malformed, is refused (the lock may be edited)."""
    d = pathlib.Path(models_dir)
    p = d / LOCK_NAME
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{p}: not a weights lock file ({exc}); fix or delete it (fetch records files "
                           "again)") from None
    for k, rec in files.items():
        if not isinstance(rec, dict):
            raise WeightsError(f"{p}: record {k!r} is not an object")
        safe_join(d, rec.get("file"), what=f"{p}: record {k!r} file")     # UnsafePathError names it
        try:
            table.check_digest(rec.get("digest_kind"), rec.get("digest"), what=f"{p}: record {k!r}")
        except ValueError as exc:
            raise WeightsError(str(exc)) from None
    return files


def _record(models_dir: pathlib.Path, records: dict[str, dict]) -> None:
    """Merge RECORDS into the lock file: read, update and write back under the lock, the new version
    written to a temporary file and renamed over the old one."""
    with _flock(models_dir / f".{LOCK_NAME}.lock"):
        files = read_lock(models_dir)
        files.update(records)
        atomic_write_text(models_dir / LOCK_NAME,
                          json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n")


# -- what is there ---------------------------------------------------------------------------------

@dataclass
class FileStatus:
    key: str
    stage: str
    path: pathlib.Path
    state: str                           # present | missing | checksum-mismatch | unverified
    detail: str = ""


def file_status(models_dir: str | os.PathLike, e: WeightEntry, f: WeightFile, lock: dict[str, dict], *,
                verify: bool = False) -> FileStatus:
    """Whether the file is there and matches its digest (the published one, else the one --expect gave).
    A file whose size and mtime still equal the lock's record is trusted without hashing it again
    unless ``verify``."""
    what = table.key(e, f)
    path = table.file_path(models_dir, e, f)
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        detail = f"{part.stat().st_size} bytes in {part.name}: fetch resumes" if part.is_file() else ""
        return FileStatus(what, e.stage, path, "missing", detail)
    rec = lock.get(what) or {}
    want = f.digest or (rec.get("digest") if rec.get("digest_kind") == f.digest_kind else None)
    if want is None:
        return FileStatus(what, e.stage, path, "unverified", "no published digest: fetch it with --expect")
    st = path.stat()
    if not verify and rec.get("digest") == want and rec.get("size") == st.st_size \
            and rec.get("mtime_ns") == st.st_mtime_ns:
        return FileStatus(what, e.stage, path, "present", "as recorded in the lock file")
    got = digest_file(path, f.digest_kind)
    if got != want:
        return FileStatus(what, e.stage, path, "checksum-mismatch", f"expected {want}, got {got}")
    return FileStatus(what, e.stage, path, "present", f"{f.digest_kind} verified")


# the config settings a fetched file fills when the user left them empty: (section, key) -> (entry, file)
CONFIG_SETTINGS = {("music_screen", "checkpoint"): ("panns", "Cnn14_DecisionLevelMax_mAP=0.385.pth"),
                   ("dedup", "clap_checkpoint"): ("clap", "630k-audioset-best.pt")}


def with_fetched_weights(cfg):
    """CFG with each empty checkpoint setting pointed at the fetched file, when the lock file records it
    verified and it is unchanged since (size and mtime): this is how `sao weights fetch` points the config
    at what it fetched. A setting the user gave is never replaced; each decision still records the
    checkpoint's own checksum, so what made it stays provable."""
    import dataclasses
    d = default_models_dir(cfg)
    if not (d / LOCK_NAME).is_file():
        return cfg
    try:
        lock = read_lock(d)
    except (WeightsError, ValueError) as exc:
        log.warning("weights lock file ignored: %s", exc)
        return cfg
    for (section, key), (name, file) in CONFIG_SETTINGS.items():
        sec = getattr(cfg, section)
        if getattr(sec, key):
            continue
        e = table.entry(name)
        f = next(x for x in e.files if x.name == file)
        st = file_status(d, e, f, lock)
        if st.state == "present" and st.detail == "as recorded in the lock file":
            log.info("[%s].%s not set: using the fetched, verified %s (%s)", section, key, st.path, LOCK_NAME)
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sec, **{key: str(st.path)})})
    return cfg


def status(models_dir: str | os.PathLike, *, verify: bool = False) -> tuple[list[FileStatus], dict[str, bool]]:
    """Every file of the table, and for each stage whether it would run calibrated: all its files present
    and verified."""
    lock = read_lock(models_dir)
    files = [file_status(models_dir, e, f, lock, verify=verify) for e in table.ENTRIES for f in e.files]
    by_key = {s.key: s for s in files}
    calibrated = {stage: all(by_key[table.key(e, f)].state == "present"
                             for e in table.stage_entries(stage) for f in e.files)
                  for stage in table.STAGES}
    return files, calibrated
