"""Project configuration: one TOML file, validated, with defaults that serve the demo.

Unknown sections or keys, and values of the wrong type, are errors that name the offending
key, so a typo never silently falls back to a default. Relative paths resolve against the
folder of the config file (or the working directory when no file is given).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any

from .fsutil import is_remote, local_part
from .licensing.model_use import DEFAULT_MODEL_USE, RETIRED_POLICY_KEYS


class ConfigError(ValueError):
    """The configuration file is malformed; the message names the key and the reason."""


@dataclass
class PathsConfig:
    data_dir: str = "data"
    catalog: str = "data/catalog.duckdb"
    audio_store: str = "data/audio"
    exports: str = "data/exports"
    sample_corpus: str = "datasets/sample"
    releases: str = "attribution/releases"     # one report folder per release
    checkpoints: str = "data/train"            # searched for checkpoint manifests by `takedown impact`


@dataclass
class ReplicaConfig:
    host: str = "127.0.0.1"
    port: int = 0                      # 0: pick a free port
    data_dir: str = "data/replica"
    api_tokens: list[str] = field(default_factory=lambda: ["sao-demo-token"])
    oauth_tokens: list[str] = field(default_factory=lambda: ["sao-demo-oauth"])
    rate_limit_per_minute: int = 600   # the replica's throttle; freesound.org level 1 is 60
    max_page_size: int = 150
    # the site in the sounds' page URLs (Freesound's "url" field). Not the loopback address, whose port
    # changes per run (attribution would churn), and not freesound.org: the corpus audio is not hosted there.
    page_site: str = "https://freesound-replica.invalid"


@dataclass
class FreesoundConfig:
    enabled: bool = True                     # false: no crawl and no downloads (e.g. only a local folder)
    base_url: str = "https://freesound.org/apiv2"
    token_env: str = "FREESOUND_API_TOKEN"   # the API token is read from this variable...
    token_file: str = ""                     # ...or from this file (first line); never from the config itself
    oauth_token_env: str = "FREESOUND_OAUTH_TOKEN"  # a plain OAuth2 access token (wins over the token file)
    oauth_client_id: str = ""                # your API credential's client id, for `sao auth freesound`
    oauth_client_secret_env: str = "FREESOUND_CLIENT_SECRET"  # its client secret: only from this variable
    oauth_token_file: str = ""               # OAuth2 tokens; "" = $XDG_CONFIG_HOME/sao/freesound-oauth.json
                                             # (~/.config/sao/...); never inside the project folder
    rate_limit_per_minute: int = 60
    # the API key's daily quota (level 1: 2000; level 2: 5000; level 3: 15000), counted over a sliding
    # day in the catalogue and shared by every run with the same key; the crawl pauses when it is spent
    requests_per_day: int = 2000
    page_size: int = 150
    commit_every_pages: int = 20             # pages per catalogue transaction (a crash loses at most these)
    timeout_s: int = 60
    max_retries: int = 6
    retry_base_delay_s: float = 1.0          # backoff: base * 2^attempt (jittered), unless Retry-After says
    download: bool = True                    # download audio for items that pass the gate
    download_originals: bool = False         # originals need OAuth2; HQ previews otherwise
    max_download_mb: int = 2048              # a larger file is refused while streaming (bytes past it unread)
    download_deadline_s: float = 600.0       # per file, overall: a server trickling bytes cannot hold a worker
    request_sim_laion_clap: bool = False     # ask for the precomputed LAION-CLAP vectors


@dataclass
class FmaConfig:
    metadata_dir: str = ""                   # folder holding fma_metadata/ and fma_large/ ("" = none)


@dataclass
class LocalConfig:
    # a folder of your own CC-licensed audio with metadata.csv or one JSON sidecar per file ("" = none;
    # sao/sources/local_folder.py says what they hold)
    folder: str = ""


@dataclass
class PolicyConfig:
    allowed_licenses: list[str] = field(default_factory=lambda: ["cc0-1.0", "cc-by-3.0", "cc-by-4.0",
                                                                 "cc-sampling+-1.0"])
    # how the trained model will be released: research-only, closed-weights, open-weights-noncommercial or
    # open-weights-commercial; it decides which Freesound gen_ai_preference values admit a recording
    # (the table in sao/licensing/model_use.py). The default admits the fewest.
    model_use: str = DEFAULT_MODEL_USE


@dataclass
class ShardsConfig:
    root: str = "data/shards"                # local folder or any fsspec URL (s3://bucket/prefix, ...)
    seed: int = 0
    required_stages: list[str] = field(default_factory=lambda: ["license_gate", "copyright_review", "dedup"])
    target_shard_mb: int = 256
    workers: int = 2
    ae_max_chunks: int = 3
    hifi_extra_chunks: int = 3
    max_windows_per_recording: int = 0       # 0: every 47.5 s window of a long recording


@dataclass
class MusicScreenConfig:
    checkpoint: str = ""                     # local Cnn14_DecisionLevelMax .pth / .safetensors
    uncalibrated: bool = False               # allow random weights (every decision then says so)
    threshold: float = 0.15
    min_seconds: float = 30.0
    contiguous: bool = False                 # the paper does not say; cumulative by default
    classes: list[int] = field(default_factory=list)   # empty: the AudioSet Music branch (150 classes)
    window_seconds: float = 10.0
    batch_size: int = 8
    device: str = ""                         # "" = cuda when available, else cpu


@dataclass
class ReviewConfig:
    detection_url: str = ""                  # content-detection service; "" = none (items stay pending)
    detection_key_env: str = "SAO_DETECTION_API_KEY"
    timeout_s: int = 30
    wait_seconds: float = 10.0               # how long one run polls for verdicts
    # CSV/Parquet of copyrighted recordings loaded before the FMA match; "" = none (the match then refuses
    # to run unless `sao review load-catalogue` loaded one). No demo data here: the demo passes its sample.
    copyright_catalogue: str = ""
    title_min_score: float = 90.0
    reference_dir: str = ""                  # reference tracks for the loopback detection service


@dataclass
class DedupConfig:
    clap_checkpoint: str = ""                # local LAION-CLAP checkpoint (non-fusion), e.g. 630k-audioset-best.pt
    clap_model: str = "HTSAT-tiny"           # HTSAT-tiny or HTSAT-base, as the checkpoint was trained
    uncalibrated: bool = False               # allow random weights (outputs then say so)
    embeddings_dir: str = "data/embeddings"
    threshold: float = 0.95                  # cosine similarity for near replicas
    batch_size: int = 8
    max_windows: int = 4                     # 10 s windows per long file
    reuse_freesound_sim: bool = False        # use crawled sim_laion_clap vectors: only if they come from
                                             # the same checkpoint as clap_checkpoint
    device: str = ""


@dataclass
class LoggingConfig:
    level: str = "INFO"


@dataclass
class OrchestrationConfig:
    """How the Prefect flows run (never what they compute: left out of the config hash)."""
    task_runner: str = "thread"              # thread | dask | ray
    workers: int = 2                         # threads, Dask workers (LocalCluster) or Ray CPUs
    dask_address: str = ""                   # an existing Dask scheduler (tcp://host:8786); "" = LocalCluster
    ray_address: str = ""                    # an existing Ray cluster (ray://host:10001); "" = local Ray
    batch_files: int = 16                    # files per mapped task (download, screen, embed)
    results_dir: str = "data/prefect-results"  # persisted task results (the cross-run cache)
    cache: bool = True                       # reuse results of unchanged batches across runs
    freesound_rate_limit: str = "freesound-api"  # Prefect global concurrency limit shared by all workers


@dataclass
class SigningConfig:
    """The ed25519 key that signs checkpoints and releases (sao.signing). Only a path: the key itself is
    never in the config. --key-file wins over it; without either, $SAO_SIGNING_KEY (PEM text or a path)."""
    key_file: str = ""                       # PEM private key from `sao keys generate`; "" = none (unsigned)


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    freesound: FreesoundConfig = field(default_factory=FreesoundConfig)
    fma: FmaConfig = field(default_factory=FmaConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    music_screen: MusicScreenConfig = field(default_factory=MusicScreenConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    orchestration: OrchestrationConfig = field(default_factory=OrchestrationConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    root: pathlib.Path = field(default_factory=pathlib.Path.cwd, compare=False)

    def path(self, value: str) -> pathlib.Path:
        p = pathlib.Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.root / p)

    def location(self, value: str) -> str:
        """An output location: a remote fsspec URL as given (``s3://bucket/x``), else an absolute local
        path (a ``file://`` URL or a path, relative ones against the config)."""
        return value if is_remote(value) else str(self.path(local_part(value)))

    @property
    def catalog_path(self) -> pathlib.Path:
        return self.path(self.paths.catalog)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("root")
        return d

    def config_hash(self) -> str:
        """Stable hash of the effective configuration, recorded with every decision. How flows are
        run ([orchestration]: runner, workers, cache folder) never changes an output, so it is left out."""
        d = self.to_dict()
        d.pop("orchestration")
        d.pop("signing")                     # who signs never changes what is computed
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS = {"paths": PathsConfig, "replica": ReplicaConfig, "freesound": FreesoundConfig, "fma": FmaConfig,
             "local": LocalConfig, "policy": PolicyConfig, "shards": ShardsConfig, "music_screen": MusicScreenConfig,
             "review": ReviewConfig, "dedup": DedupConfig, "logging": LoggingConfig,
             "orchestration": OrchestrationConfig, "signing": SigningConfig}


def _check_type(section: str, key: str, value: Any, default: Any, element: type | None = None) -> Any:
    where = f"[{section}].{key}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        kind = element or str
        ok = isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {type(value).__name__} ({value!r})")
    if isinstance(default, (int, float)) and not isinstance(default, bool) and value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value}")
    return value


def from_dict(data: dict[str, Any], root: pathlib.Path | None = None) -> Config:
    cfg = Config(root=root or pathlib.Path.cwd())
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(sorted(_SECTIONS))})")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        obj = getattr(cfg, section)
        known = {f.name for f in dataclasses.fields(obj)}
        for key, value in values.items():
            if section == "policy" and key in RETIRED_POLICY_KEYS:   # removed: say what replaced it
                raise ConfigError(f"[policy].{key}: {RETIRED_POLICY_KEYS[key]}")
            if key not in known:
                raise ConfigError(f"[{section}].{key}: unknown key (known: {', '.join(sorted(known))})")
            hint = typing.get_type_hints(type(obj))[key]
            element = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
            setattr(obj, key, _check_type(section, key, value, getattr(obj, key), element))
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"[logging].level: {cfg.logging.level!r} is not DEBUG, INFO, WARNING or ERROR")
    from .licensing import ALLOWED_LICENSES
    bad = [x for x in cfg.policy.allowed_licenses if x not in ALLOWED_LICENSES]
    if bad:
        # the allow-list can be narrowed, never widened beyond the paper's policy
        raise ConfigError(f"[policy].allowed_licenses: {bad} not in {sorted(ALLOWED_LICENSES)}")
    from .licensing.model_use import model_use_problem
    problem = model_use_problem(cfg.policy.model_use)
    if problem:
        raise ConfigError(f"[policy].model_use: {problem}")
    if not 1 <= cfg.freesound.page_size <= 150:
        raise ConfigError("[freesound].page_size: must be between 1 and 150 (the API maximum)")
    if cfg.freesound.max_download_mb < 1:
        raise ConfigError("[freesound].max_download_mb: must be at least 1")
    if cfg.freesound.download_deadline_s <= 0:
        raise ConfigError("[freesound].download_deadline_s: must be more than 0")
    ms = cfg.music_screen
    if not 0.0 < ms.threshold < 1.0:
        raise ConfigError("[music_screen].threshold: must be between 0 and 1")
    if any(not 0 <= c < 527 for c in ms.classes):
        raise ConfigError("[music_screen].classes: AudioSet class indices are 0..526")
    if ms.window_seconds < 1 or ms.batch_size < 1:
        raise ConfigError("[music_screen].window_seconds and batch_size must be at least 1")
    if not cfg.shards.required_stages:
        raise ConfigError("[shards].required_stages: at least one stage must admit an item (e.g. license_gate)")
    if cfg.shards.target_shard_mb < 1 or cfg.shards.workers < 1:
        raise ConfigError("[shards].target_shard_mb and [shards].workers must be at least 1")
    if cfg.freesound.commit_every_pages < 1:
        raise ConfigError("[freesound].commit_every_pages: must be at least 1")
    if cfg.freesound.rate_limit_per_minute < 1:
        raise ConfigError("[freesound].rate_limit_per_minute: must be at least 1")
    if not 1 <= cfg.freesound.requests_per_day <= 100_000_000:
        raise ConfigError("[freesound].requests_per_day: must be between 1 and 100000000 "
                          "(a standard API key allows 2000)")
    oc = cfg.orchestration
    if oc.task_runner not in ("thread", "dask", "ray"):
        raise ConfigError(f"[orchestration].task_runner: {oc.task_runner!r} is not thread, dask or ray")
    if oc.workers < 1 or oc.batch_files < 1:
        raise ConfigError("[orchestration].workers and batch_files must be at least 1")
    if not 1 <= cfg.replica.max_page_size <= 1000:
        raise ConfigError("[replica].max_page_size: must be between 1 and 1000")
    return cfg


def freesound_token(cfg: Config) -> str:
    """The API token from the environment, else from the token file; '' when neither is set."""
    token = os.environ.get(cfg.freesound.token_env, "").strip()
    if not token and cfg.freesound.token_file:
        p = cfg.path(cfg.freesound.token_file)
        if not p.is_file():
            raise ConfigError(f"[freesound].token_file: {p} does not exist")
        token = (p.read_text(encoding="utf-8").splitlines() or [""])[0].strip()
    return token


def freesound_oauth_token(cfg: Config) -> str | None:
    """A plain OAuth2 access token from the environment (no refresh), or None."""
    return os.environ.get(cfg.freesound.oauth_token_env, "").strip() or None


def freesound_client_secret(cfg: Config) -> str | None:
    """The OAuth2 client secret, only ever from the environment variable the config names."""
    return os.environ.get(cfg.freesound.oauth_client_secret_env, "").strip() or None


def secrets(cfg: Config) -> list[str]:
    """Every credential this config can reach (to redact from anything stored or printed)."""
    return [x for x in (freesound_token(cfg), freesound_oauth_token(cfg), freesound_client_secret(cfg),
                        os.environ.get(cfg.review.detection_key_env), *cfg.replica.api_tokens,
                        *cfg.replica.oauth_tokens, *_signing_key_texts(cfg)) if x]


def _signing_key_texts(cfg: Config) -> list[str]:
    from .signing import key_file_for, secret_texts
    return secret_texts(key_file_for(cfg))


def shards_root(cfg: Config) -> str:
    """The shards root as a URL or absolute path (relative paths resolve against the config)."""
    return cfg.shards.root if "://" in cfg.shards.root else str(cfg.path(cfg.shards.root))


def license_policy(cfg: Config):
    from .licensing import LicensePolicy
    return LicensePolicy(allowed=frozenset(cfg.policy.allowed_licenses), model_use=cfg.policy.model_use)


def load(path: str | os.PathLike | None = None) -> Config:
    """Load a config file; with no path, use $SAO_CONFIG or ./sao.toml when present, else defaults."""
    if path is None:
        path = os.environ.get("SAO_CONFIG") or ("sao.toml" if pathlib.Path("sao.toml").exists() else None)
    if path is None:
        return _with_fetched_weights(Config())
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return _with_fetched_weights(from_dict(data, root=p.resolve().parent))


def _with_fetched_weights(cfg: Config) -> Config:
    from .weights.lock import with_fetched_weights     # (sao.weights: `sao weights fetch` and its lock file)
    return with_fetched_weights(cfg)


def to_toml(cfg: Config) -> str:
    """Render a config as TOML (used by `sao config show`)."""
    out = []
    for section, values in cfg.to_dict().items():
        out.append(f"[{section}]")
        for k, v in values.items():
            out.append(f"{k} = {json.dumps(v)}")
        out.append("")
    return "\n".join(out)
