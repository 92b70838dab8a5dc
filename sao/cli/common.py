"""What the command modules share: the command contract, the config loaded once, the catalogue, shared groups.

Every command is `cmd_x(args, cfg) -> int` (the exit status), set as its parser's `func`; main() loads the
config once (`load_config`) and passes it in. A command marked @no_config also runs when the config does not
load (with --log-level given; without it the config is needed for the log level), and then gets cfg None.
"""
from __future__ import annotations

import argparse
import weakref

from .. import config as config_mod


def no_config(func):
    """Mark command FUNC as one that needs no config (it may then be called with cfg None)."""
    func.needs_config = False
    return func


def needs_config(func) -> bool:
    return getattr(func, "needs_config", True)


def load_config(args: argparse.Namespace) -> config_mod.Config | None:
    """The config of this run, loaded once: --config, else $SAO_CONFIG or ./sao.toml, else the defaults.

    A ConfigError propagates (main() exits 2), except when --log-level says how to log without a config and the
    command needs none: then None.
    """
    try:
        return config_mod.load(args.config)
    except config_mod.ConfigError:
        if not args.log_level or needs_config(args.func):
            raise
        return None


def open_catalog(cfg: config_mod.Config, **kw):
    """The configured catalogue (migrated to the current schema unless read_only)."""
    from ..catalog import Catalog
    return Catalog(cfg.catalog_path, **kw)


_groups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """The sub-commands of command group NAME under SUB, created on first use, so that two modules can each
    add commands to one group (`review run` in pipeline.py, the rest of `review` in review.py)."""
    known = _groups.setdefault(sub, {})
    if name not in known:
        known[name] = (sub.add_parser(name, help=help).add_subparsers(dest="sub", required=True), help)
    elif known[name][1] != help:
        raise ValueError(f"command group {name!r}: help {help!r} differs from the first {known[name][1]!r}")
    return known[name][0]
