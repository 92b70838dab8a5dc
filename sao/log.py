"""Logging set-up and progress bars shared by every stage."""
from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (it may be replaced, e.g. by test capture)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(level: str = "INFO") -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False):
    """A tqdm bar on stderr; silent when SAO_NO_PROGRESS=1 or stderr is not a terminal in CI."""
    disable = disable or os.environ.get("SAO_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False)
