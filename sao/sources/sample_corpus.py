"""The shipped sample corpus (datasets/sample): real recordings with their real metadata.

``metadata.json`` is written by ``datasets/build_sample_corpus.py``; this module reads it,
validates every entry, and checks that each file is present, unmodified and decodable.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

from ..audio import AudioDecodeError, file_digests, probe

REQUIRED = ("id", "file", "title", "author", "license", "license_url", "kind", "replica", "music",
            "source_package", "source_path", "attribution_from", "duration", "sample_rate", "channels",
            "sha256", "md5", "bytes")
KINDS = ("sfx", "ambience", "field-recording", "music", "speech")
REPLICAS = ("freesound", "fma")


class CorpusError(ValueError):
    """The corpus metadata is malformed; the message names the entry and the reason."""


def default_corpus_dir() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2] / "datasets" / "sample"


def load_metadata(corpus_dir: str | pathlib.Path | None = None) -> list[dict[str, Any]]:
    d = pathlib.Path(corpus_dir) if corpus_dir else default_corpus_dir()
    meta = d / "metadata.json"
    if not meta.is_file():
        raise CorpusError(f"{meta}: missing (rebuild with `make corpus`)")
    try:
        entries = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{meta}: not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise CorpusError(f"{meta}: expected a list of entries")
    seen = set()
    for i, e in enumerate(entries):
        ident = e.get("id", f"#{i}") if isinstance(e, dict) else f"#{i}"
        if not isinstance(e, dict):
            raise CorpusError(f"{meta}: entry {ident} is not an object")
        missing = [k for k in REQUIRED if k not in e]
        if missing:
            raise CorpusError(f"{meta}: entry {ident} lacks {', '.join(missing)}")
        for k in ("title", "author", "license"):
            if not isinstance(e[k], str) or not e[k].strip():
                raise CorpusError(f"{meta}: entry {ident} has an empty {k}")
        if e["kind"] not in KINDS:
            raise CorpusError(f"{meta}: entry {ident} has kind {e['kind']!r}, not one of {KINDS}")
        if e["replica"] not in REPLICAS:
            raise CorpusError(f"{meta}: entry {ident} has replica {e['replica']!r}, not one of {REPLICAS}")
        rel = pathlib.PurePosixPath(e["file"])
        if rel.is_absolute() or ".." in rel.parts:
            raise CorpusError(f"{meta}: entry {ident} file {e['file']!r} escapes the corpus folder")
        if ident in seen:
            raise CorpusError(f"{meta}: duplicate id {ident}")
        seen.add(ident)
        e["path"] = str(d / rel)
    return entries


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(corpus_dir: str | pathlib.Path | None = None, *, decode: bool = True) -> VerifyReport:
    """Check each file's presence, sha256 and (with decode) that it decodes to the recorded shape."""
    from ..audio import load
    rep = VerifyReport()
    for e in load_metadata(corpus_dir):
        p = pathlib.Path(e["path"])
        rep.checked += 1
        if not p.is_file():
            rep.problems.append(f"{e['id']}: file {e['file']} is missing")
            continue
        sha, _ = file_digests(p)
        if sha != e["sha256"]:
            rep.problems.append(f"{e['id']}: sha256 {sha[:12]} differs from metadata {e['sha256'][:12]}")
        rep.bytes += p.stat().st_size
        try:
            info = probe(p)
            if decode:
                x, _ = load(p)
                if x.shape[1] == 0:
                    raise AudioDecodeError(f"{p}: decoded to 0 samples")
        except AudioDecodeError as exc:
            rep.problems.append(f"{e['id']}: {exc}")
            continue
        if info.sample_rate != e["sample_rate"] or info.channels != e["channels"]:
            rep.problems.append(f"{e['id']}: {info.sample_rate} Hz/{info.channels} ch differs from metadata")
        if abs(info.duration - e["duration"]) > 0.1:
            rep.problems.append(f"{e['id']}: duration {info.duration:.2f}s differs from metadata {e['duration']}")
        rep.seconds += info.duration
    return rep
