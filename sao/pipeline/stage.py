"""The stage contract every pipeline stage implements (in the spirit of datatrove's PipelineStep).

A stage declares its ``name`` (the catalogue's decision stage where it writes one), what it
``reads`` and ``writes``, and three steps:

- ``plan(ctx)``: what needs doing, read from the catalogue (a ``Plan``: work items and the
  ``meta`` every batch shares, e.g. the model signature that must not change mid-run);
- ``compute(ctx, meta, batch)``: one batch of work with **no catalogue access**, so the
  Prefect layer can map batches over workers and cache a batch by its content (a batch names
  each file by its sha256);
- ``store(ctx, plan, results)``: write what the batches found (decisions, files) and return
  one ``Stats``.

A stage that has no separable work (``batched = False``) does it all in ``store``: the crawl, for
one, commits each page with its cursor as it goes, so a killed crawl resumes where it stopped.
Plans and batch results cross process boundaries (Dask, Ray): keep them JSON-like.
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import threading
from collections import Counter
from typing import Any, Callable, ClassVar

from ..config import Config


@dataclasses.dataclass
class Stats:
    """What one stage did in one run: the one stats type every stage returns."""
    stage: str
    items_in: int = 0                      # items the stage looked at
    passed: int = 0                        # ... that it kept / admitted / stored
    rejected: Counter = dataclasses.field(default_factory=Counter)   # reason -> n
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # item -> why (one bad item never stops others)
    seconds: float = 0.0
    audio_seconds: float = 0.0
    cache_hits: int = 0
    batches: int = 0
    ingest: bool = False                   # a source's ingest: its items_in are the run's new input
    skipped: str | None = None             # why the stage did not run (e.g. no FMA dump configured)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # stage-specific figures, for people

    def reject(self, reason: str, n: int = 1) -> None:
        if n:
            self.rejected[reason] += n

    def error(self, item: str, why: str) -> None:
        self.errors[str(item)] = str(why)

    @property
    def items_per_s(self) -> float:
        return self.items_in / self.seconds if self.seconds else 0.0

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict would rebuild a Counter inside ``details`` from its pairs
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["details"] = _plain(self.details)
        d["errors"] = dict(self.errors)
        d["rejected"] = dict(sorted(self.rejected.items()))
        d["items_per_s"] = round(self.items_per_s, 2)
        d["audio_s_per_s"] = round(self.audio_s_per_s, 2)
        d["seconds"] = round(self.seconds, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["rejected"] = Counter(kw.get("rejected") or {})
        return cls(**kw)


def _plain(v: Any) -> Any:
    """Dicts (Counters included) and sequences as plain JSON-like values."""
    if isinstance(v, dict):
        return {k if isinstance(k, str) else str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclasses.dataclass
class Plan:
    items: list = dataclasses.field(default_factory=list)          # work items, split into batches
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # shared by every batch (part of its cache key)
    keep: dict[str, Any] = dataclasses.field(default_factory=dict)  # for ``store`` only, never sent to a batch
    skipped: str | None = None


@dataclasses.dataclass
class RunOptions:
    """What a caller may set for one run, beyond the config. Crosses into Prefect tasks as a dict,
    so it holds no secret: a token or key given on the command line stays in ``StageContext.secrets``."""
    full: bool = False                  # Freesound: a full listing instead of the incremental one
    reconcile: bool = False             # ... and reconcile deletions and re-licensing after it
    fma_dir: str | None = None          # override [fma].metadata_dir
    local_dir: str | None = None        # override [local].folder
    base_url: str | None = None         # override [freesound].base_url (the demo's loopback replica)
    uncalibrated: bool | None = None    # override [music_screen]/[dedup].uncalibrated (random weights)
    detection_url: str | None = None    # override [review].detection_url
    screen_checkpoint: str | None = None  # override [music_screen].checkpoint
    limit: int | None = None            # at most this many downloads
    release_name: str | None = None     # the release to freeze (default rel-<content hash>) or build shards from
    release_notes: str | None = None
    shards_name: str | None = None      # the shard snapshot's name (default snap-<plan hash>)
    key_file: str | None = None         # the signing key (default [signing].key_file / $SAO_SIGNING_KEY)
    workers: int | None = None          # processes for CPU-bound stages (default per stage config)
    refresh_cache: bool = False         # recompute cached batches; re-read an unchanged FMA dump

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "RunOptions":
        return cls(**(d or {}))


# models loaded once per process (a Prefect worker runs many batches of the same stage); at most two
# kept, the least recently used dropped (a PANNs model is ~340 MB)
_MODELS: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
MODELS_KEPT = 2
# one load at a time: the batches of a Prefect thread pool start together, and two threads importing
# laion_clap/transformers at once break its lazy imports
_MODELS_LOCK = threading.RLock()


def file_identity(path: str | pathlib.Path | None) -> tuple:
    """A weight file as a cache key: its resolved path, size and modification time (a file replaced at
    the same path is a new key)."""
    if not path:
        return (None,)
    p = pathlib.Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        return (str(p), None)
    return (str(p), st.st_size, st.st_mtime_ns)


@dataclasses.dataclass
class StageContext:
    cfg: Config
    options: RunOptions = dataclasses.field(default_factory=RunOptions)
    secrets: dict[str, str] = dataclasses.field(default_factory=dict)   # "freesound_token", "detection_key"
    wrap_client: Callable | None = None  # the Prefect flows share the Freesound rate limit across workers this way
    show_progress: bool = True

    @property
    def audio_store(self) -> pathlib.Path:
        return self.cfg.path(self.cfg.paths.audio_store)

    @property
    def config_hash(self) -> str:
        return self.cfg.config_hash()

    def catalog(self, *, read_only: bool = False):
        from ..catalog import Catalog
        return Catalog(self.cfg.catalog_path, read_only=read_only)

    def model(self, key: tuple, load: Callable[[], Any]) -> Any:
        """``load()`` once per process and ``key``: the config hash plus what picks the weights (give the
        weight file through ``file_identity``)."""
        k = (self.config_hash, *key)
        with _MODELS_LOCK:
            if k in _MODELS:
                _MODELS.move_to_end(k)
            else:
                while len(_MODELS) >= MODELS_KEPT:
                    _MODELS.popitem(last=False)
                _MODELS[k] = load()
            return _MODELS[k]


class Stage:
    """One step of the pipeline. Subclasses set ``name``, ``reads``, ``writes`` and implement
    ``plan``/``compute``/``store`` (or only ``store`` when ``batched`` is False)."""
    name: ClassVar[str] = ""
    group: ClassVar[str] = "refresh"      # "refresh": the data stages; "rebuild": release, shards, report
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    batched: ClassVar[bool] = False       # compute maps over plan.items in batches
    cacheable: ClassVar[bool] = False     # compute's result depends only on (meta, batch): safe to cache
    timeout_s: ClassVar[int] = 6 * 3600   # per task, in the Prefect flows
    optional: ClassVar[bool] = False      # skipping is normal (a source nobody configured): logged, not warned
    batch_size: ClassVar[int | None] = None   # items per batch (None: [orchestration].batch_files)
    max_reruns: ClassVar[int] = 0         # times ``again`` may ask for the stage to run once more
    # True: ``store_batch`` writes each batch's result as it arrives (downloads), so a killed run keeps
    # what it fetched; ``store`` then only sums up
    stores_batches: ClassVar[bool] = False

    def workers(self, ctx: StageContext) -> int:
        """Processes the inline runner may use for ``compute`` (CPU-bound stages say more than 1)."""
        return 1

    def again(self, ctx: StageContext, stats: Stats) -> bool:
        """After ``store``: should the stage plan and run once more? (The shard build does when a
        recording failed part-way: those are decode rejects now, so the next plan leaves them out.)"""
        return False

    def skip(self, ctx: StageContext) -> str | None:
        """Why this stage does not run with this config (None: it runs)."""
        return None

    def plan(self, ctx: StageContext) -> Plan:
        return Plan()

    def compute(self, ctx: StageContext, meta: dict[str, Any], batch: list) -> Any:
        raise NotImplementedError(f"stage {self.name!r} has no batched work")

    def store_batch(self, ctx: StageContext, plan: Plan, result: Any) -> None:
        """With ``stores_batches``: write one batch's result (called as each batch finishes)."""

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        raise NotImplementedError

    def carry(self, stats: Stats) -> dict[str, Any]:
        """RunOptions values this stage hands to the later stages of the same run (the release it froze
        is the one the shards and the report are built from)."""
        return {}

    def __repr__(self) -> str:
        return f"<stage {self.name}>"
