"""Where recordings come from: the shipped sample corpus, the loopback replicas, the crawlers, and the
sources the pipeline ingests (``SOURCES``: each one's protocol in sao/sources/base.py)."""
from __future__ import annotations

from .base import Source, check_source
from .fma_source import FmaSource
from .freesound_source import FreesoundSource
from .local_folder import LocalFolderSource

# In pipeline order (their ingest stages run in this order). The catalogue's `source` CHECK and
# sao.catalog.store.SOURCE_NAMES list the same names (tests/test_sources.py checks they agree).
SOURCES: dict[str, Source] = {s.name: check_source(s) for s in (FreesoundSource(), FmaSource(), LocalFolderSource())}


class UnknownSource(KeyError):
    """A source name no ``Source`` in ``SOURCES`` has."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown source"


def source_for(name: str) -> Source:
    """The source named ``name`` (a recording's ``source``)."""
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        raise UnknownSource(f"unknown source {name!r} (sources: {', '.join(SOURCES)})") from None


def names_where(**declared) -> list[str]:
    """Names of the sources whose declarations equal ``declared`` (e.g. ``music_screen=True``), in order."""
    return [n for n, s in SOURCES.items() if all(getattr(s, k) == v for k, v in declared.items())]


__all__ = ["SOURCES", "Source", "UnknownSource", "names_where", "source_for"]
