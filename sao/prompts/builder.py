"""Prompt builder, following paper section 3.2.

* Freesound items: a random subset of description, title and tags; FMA items: a random
  subset of year, genres, album, title and artist. The chosen fields appear in random order.
  Each source picks one of these two styles (``PROMPT_STYLES``; a local folder's sounds use
  Freesound's).
* List values (tags, genres) are shuffled and a random non-empty prefix of them is kept.
* The whole prompt then gets a random case transform: as-is, lower, upper or title case.
* FMA only: half of the prompts carry the metadata type ("year: 2021, artist: dadabots, ...")
  and half do not ("dadabots, ..., 2021"). Fields are joined with ", ".

Everything is a pure function of (seed, item key, epoch): the same triple always gives the
same prompt, on any machine (the RNG is seeded from a sha256, not Python's salted hash).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

CASES = ("as-is", "lower", "upper", "title")
FREESOUND_FIELDS = ("description", "title", "tags")
FMA_FIELDS = ("year", "genres", "album", "title", "artist")
_URL = re.compile(r"https?://\S+|www\.\S+")


@dataclass(frozen=True)
class PromptInputs:
    """The metadata a prompt is made from; stored beside every sample so a loader can redraw."""
    kind: str                                   # the prompt style its source chose: "freesound" or "fma"
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    year: str = ""
    genres: tuple[str, ...] = ()
    album: str = ""
    artist: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "description": self.description, "tags": list(self.tags),
                "year": self.year, "genres": list(self.genres), "album": self.album, "artist": self.artist}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromptInputs":
        return cls(kind=d["kind"], title=d.get("title", ""), description=d.get("description", ""),
                   tags=tuple(d.get("tags") or ()), year=str(d.get("year") or ""), genres=tuple(d.get("genres") or ()),
                   album=d.get("album", ""), artist=d.get("artist", ""))


@dataclass(frozen=True)
class PromptConfig:
    case_weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)   # as-is, lower, upper, title
    labelled_share: float = 0.5                                  # FMA prompts that carry "type: value"
    max_description_chars: int = 400                             # T5 sees at most 128 tokens anyway
    extra: dict = field(default_factory=dict)


def prompt_rng(seed: int, key: str, epoch: int = 0) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{epoch}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def clean_text(text: str, limit: int) -> str:
    """Descriptions carry URLs and markup that say nothing about the sound."""
    text = _URL.sub(" ", text or "")
    text = re.sub(r"<[^>]{0,200}>", " ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0]
    return text.strip(" ,;")


def _list_value(values: tuple[str, ...], rng: random.Random) -> str:
    vals = [v for v in values if v and v.strip()]
    rng.shuffle(vals)
    return ", ".join(vals[: rng.randint(1, len(vals))])


def title_case(text: str) -> str:
    """Capitalise the first letter of every word (str.title would give "Can'T")."""
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def apply_case(text: str, case: str) -> str:
    return {"as-is": text, "lower": text.lower(), "upper": text.upper(), "title": title_case(text)}[case]


def _choose_fields(available: list[str], rng: random.Random) -> list[str]:
    return rng.sample(available, rng.randint(1, len(available)))


def freesound_prompt(inp: PromptInputs, rng: random.Random, cfg: PromptConfig = PromptConfig()) -> str:
    values = {"description": clean_text(inp.description, cfg.max_description_chars),
              "title": " ".join(inp.title.split()), "tags": inp.tags}
    available = [f for f in FREESOUND_FIELDS if (values[f] if f != "tags" else any(t.strip() for t in inp.tags))]
    if not available:
        return ""
    parts = [(_list_value(values[f], rng) if f == "tags" else values[f]) for f in _choose_fields(available, rng)]
    return apply_case(", ".join(parts), rng.choices(CASES, cfg.case_weights)[0])


def fma_prompt(inp: PromptInputs, rng: random.Random, cfg: PromptConfig = PromptConfig()) -> str:
    values = {"year": inp.year.strip(), "genres": inp.genres, "album": inp.album.strip(), "title": inp.title.strip(),
              "artist": inp.artist.strip()}
    available = [f for f in FMA_FIELDS if (values[f] if f != "genres" else any(g.strip() for g in inp.genres))]
    if not available:
        return ""
    labelled = rng.random() < cfg.labelled_share
    parts = []
    for f in _choose_fields(available, rng):
        v = _list_value(values[f], rng) if f == "genres" else values[f]
        parts.append(f"{f}: {v}" if labelled else v)
    return apply_case(", ".join(parts), rng.choices(CASES, cfg.case_weights)[0])


# The prompt styles a source may choose (sao.sources.base.Source.prompt_style): "freesound" for sounds
# described by title, description and tags (Freesound, a local folder), "fma" for music tracks.
PROMPT_STYLES = {"freesound": freesound_prompt, "fma": fma_prompt}


def build_prompt(inp: PromptInputs, *, seed: int, key: str, epoch: int = 0, cfg: PromptConfig = PromptConfig()) -> str:
    style = PROMPT_STYLES.get(inp.kind)
    if style is None:
        raise ValueError(f"prompt style {inp.kind!r}: not one of {', '.join(PROMPT_STYLES)}")
    return style(inp, prompt_rng(seed, key, epoch), cfg)


def epoch_prompt(meta: dict, *, seed: int, key: str, epoch: int) -> str:
    """The sample's prompt for this epoch, redrawn from its stored prompt inputs (JSON text in the
    shards, see sao/shards/writer.py); sao's trainer and the SAT metadata module both draw through it; the stored prompt where a sample carries no inputs."""
    inputs = meta.get("prompt_inputs")
    if isinstance(inputs, str):
        inputs = json.loads(inputs) if inputs else None
    if not inputs:
        return meta.get("prompt", "")
    return build_prompt(PromptInputs.from_dict(inputs), seed=seed, key=key, epoch=epoch)
