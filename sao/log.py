"""Logging set-up, progress bars and secret redaction shared by every stage.

``redact`` is the one redaction rule: every credential a process has seen (registered with
``register_secrets`` by the config loader and the API clients) is replaced by ``***`` in log
lines, exception messages, CLI error output and run summaries before they are written.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from http.server import ThreadingHTTPServer
from typing import Iterable

from tqdm.auto import tqdm

MIN_SECRET_CHARS = 4          # shorter values would blank out ordinary words
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember credentials so that every later ``redact`` (and log line) hides them."""
    with _SECRETS_LOCK:
        _SECRETS.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_CHARS)


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every registered secret, and each of ``secrets``, replaced by ``***``."""
    text = str(text)
    with _SECRETS_LOCK:
        known = set(_SECRETS)
    known.update(s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS)
    for s in sorted(known, key=len, reverse=True):   # longest first: one secret may contain another
        if s in text:
            text = text.replace(s, "***")
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts the whole line (message, arguments and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


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


class _LibraryChatter(logging.Filter):
    """Drops other libraries' INFO/DEBUG lines (faiss's loader, laion_clap's model-config lines on
    the root logger): the CLI's and the demo's output is sao's; their warnings still show."""

    _PATHS = ("laion_clap", "faiss", "torchlibrosa", "panns_inference")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not (record.name.startswith("faiss") or any(p in record.pathname for p in self._PATHS))


def setup_logging(level: str = "INFO") -> None:
    import warnings
    handler = _StderrHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(_LibraryChatter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    # laion_clap's HTSAT calls torch.meshgrid the old way on every forward pass
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)


def _redacting_excepthook(kind, value, tb) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def install_excepthook() -> None:
    """An uncaught exception's traceback is printed redacted too (the CLI installs this)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _redacting_excepthook


_OUTER = threading.local()


@contextlib.contextmanager
def one_bar():
    """Inside: only the outermost bar shows (the pipeline runner's, one per stage); the bars of the
    functions a stage calls stay silent instead of stacking under it."""
    depth = getattr(_OUTER, "depth", 0)
    _OUTER.depth = depth + 1
    try:
        yield
    finally:
        _OUTER.depth = depth


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False,
             outer: bool = False):
    """A tqdm bar on stderr; silent when SAO_NO_PROGRESS=1, and inside ``one_bar()`` unless ``outer``."""
    disable = disable or os.environ.get("SAO_NO_PROGRESS") == "1" or (
        not outer and getattr(_OUTER, "depth", 0) > 0)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False)


class QuietHTTPServer(ThreadingHTTPServer):
    """sao's loopback servers: a client that hangs up (a timeout, a killed crawler) is routine, not a
    traceback on stderr (it would land in whatever else the process is printing at that moment)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            logging.getLogger("sao.http").debug("client %s went away", client_address[0])
            return
        super().handle_error(request, client_address)
