"""The `sao` command line: one entry point, one sub-command per job, `--help` on each.

One module per command group (catalog, pipeline, review, release, models, demo), each with `register(sub)`;
main() parses the arguments, loads the config once and calls the command as `args.func(args, cfg)`.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from .. import config as config_mod
from ..log import install_excepthook, redact, register_secrets, setup_logging
from . import auth, catalog, demo, models, pipeline, release, review, weights
from .common import load_config

log = logging.getLogger("sao")

GROUPS = (catalog, pipeline, review, release, models, demo, auth, weights)   # pipeline before review: `review run` comes first


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sao", description="License-clean text-to-audio data pipeline and training.")
    p.add_argument("--version", action="version", version=f"sao {__version__}")
    p.add_argument("--config", help="TOML config file (default: $SAO_CONFIG, ./sao.toml, or built-in defaults)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default from config)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in GROUPS:
        module.register(sub)
    return p


def _register_secrets(cfg: config_mod.Config) -> None:
    """Every credential the config reaches is hidden from all output from here on."""
    try:
        register_secrets(config_mod.secrets(cfg))
    except config_mod.ConfigError:       # e.g. a missing token file: the command that needs it says so
        register_secrets(x for x in (*cfg.replica.api_tokens, *cfg.replica.oauth_tokens))


def main(argv: list[str] | None = None) -> int:
    from ..attribution.policy import ReleaseError
    from ..fsutil import UnsafePathError
    args = build_parser().parse_args(argv)
    install_excepthook()                   # an unexpected traceback is redacted too
    try:
        cfg = load_config(args)            # None only for a command that needs no config (common.no_config)
        if cfg is not None:
            _register_secrets(cfg)
        setup_logging(args.log_level or cfg.logging.level)
        return args.func(args, cfg)
    except config_mod.ConfigError as exc:
        print(redact(f"sao: config error: {exc}"), file=sys.stderr)
        return 2
    except (ReleaseError, UnsafePathError) as exc:   # bad input: a bad name, an unknown or changed release
        print(redact(f"sao: {exc}"), file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - top level: one clear line, details at DEBUG
        from ..catalog import CatalogError, CatalogInUse
        from ..sources.freesound import FreesoundError
        from ..sources.sample_corpus import CorpusError
        from ..analysis.panns import CheckpointError
        from ..models import CheckpointMismatch
        if isinstance(exc, CatalogInUse):  # another sao run holds the catalogue: nothing was done, try later
            log.debug("details", exc_info=True)
            print(redact(f"sao: error: {exc}"), file=sys.stderr)
            return 2
        if isinstance(exc, (CatalogError, CorpusError, FreesoundError, CheckpointError, CheckpointMismatch, ValueError,
                            OSError)):
            log.debug("details", exc_info=True)
            print(redact(f"sao: error: {exc}"), file=sys.stderr)
            return 1
        raise
