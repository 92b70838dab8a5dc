"""Logging set-up and progress bars shared by every stage."""
from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr; silent when SAO_NO_PROGRESS=1 or stderr is not a terminal in CI."""
    disable = os.environ.get("SAO_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False)
