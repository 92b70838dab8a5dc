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
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """The configuration file is malformed; the message names the key and the reason."""


@dataclass
class PathsConfig:
    data_dir: str = "data"
    catalog: str = "data/catalog.duckdb"
    audio_store: str = "data/audio"
    exports: str = "data/exports"
    sample_corpus: str = "datasets/sample"


@dataclass
class ReplicaConfig:
    host: str = "127.0.0.1"
    port: int = 0                      # 0: pick a free port
    data_dir: str = "data/replica"
    api_tokens: list[str] = field(default_factory=lambda: ["sao-demo-token"])
    oauth_tokens: list[str] = field(default_factory=lambda: ["sao-demo-oauth"])
    rate_limit_per_minute: int = 600   # the replica's throttle; freesound.org level 1 is 60
    max_page_size: int = 150


@dataclass
class FreesoundConfig:
    base_url: str = "https://freesound.org/apiv2"
    token_env: str = "FREESOUND_API_TOKEN"   # the token is read from this variable, never stored
    rate_limit_per_minute: int = 60
    page_size: int = 150


@dataclass
class LoggingConfig:
    level: str = "INFO"


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    freesound: FreesoundConfig = field(default_factory=FreesoundConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    root: pathlib.Path = field(default_factory=pathlib.Path.cwd, compare=False)

    def path(self, value: str) -> pathlib.Path:
        p = pathlib.Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.root / p)

    @property
    def catalog_path(self) -> pathlib.Path:
        return self.path(self.paths.catalog)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("root")
        return d

    def config_hash(self) -> str:
        """Stable hash of the effective configuration, recorded with every decision."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SECTIONS = {"paths": PathsConfig, "replica": ReplicaConfig, "freesound": FreesoundConfig,
             "logging": LoggingConfig}


def _check_type(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"[{section}].{key}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {type(value).__name__} ({value!r})")
    if isinstance(default, int) and not isinstance(default, bool) and value < 0:
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
            if key not in known:
                raise ConfigError(f"[{section}].{key}: unknown key (known: {', '.join(sorted(known))})")
            setattr(obj, key, _check_type(section, key, value, getattr(obj, key)))
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"[logging].level: {cfg.logging.level!r} is not DEBUG, INFO, WARNING or ERROR")
    if not 1 <= cfg.replica.max_page_size <= 1000:
        raise ConfigError("[replica].max_page_size: must be between 1 and 1000")
    return cfg


def load(path: str | os.PathLike | None = None) -> Config:
    """Load a config file; with no path, use $SAO_CONFIG or ./sao.toml when present, else defaults."""
    if path is None:
        path = os.environ.get("SAO_CONFIG") or ("sao.toml" if pathlib.Path("sao.toml").exists() else None)
    if path is None:
        return Config()
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return from_dict(data, root=p.resolve().parent)


def to_toml(cfg: Config) -> str:
    """Render a config as TOML (used by `sao config show`)."""
    out = []
    for section, values in cfg.to_dict().items():
        out.append(f"[{section}]")
        for k, v in values.items():
            out.append(f"{k} = {json.dumps(v)}")
        out.append("")
    return "\n".join(out)
