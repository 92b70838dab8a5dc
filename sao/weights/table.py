"""The checkpoints the pipeline uses, each file with its published digest: pure data and pure functions.

A digest here was copied from the publisher (Zenodo's md5 for its record; the Hugging Face LFS sha256
of the pinned revision, cross-checked against independent copies of the same file) and never computed
by us from a download we could not vouch for. Where no published digest is known the value is None:
`sao weights fetch` then refuses the file unless the user names the digest with --expect.

Files live under ``<models dir>/<entry folder>/<file name>``; every such path is made by
``sao.fsutil.safe_join``, so no name in this table or in the lock file can escape that folder.
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass

from ..fsutil import safe_join

HF_ENDPOINT = "https://huggingface.co"
DIGEST_KINDS = {"md5": 32, "sha256": 64}          # kind -> hex length
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class WeightFile:
    name: str                   # file name inside the entry's folder
    digest_kind: str            # "md5" or "sha256"
    digest: str | None          # lower-case hex; None: no published digest known (fetch needs --expect)
    size: int | None = None     # bytes, as published (None: unknown)
    url: str | None = None      # a direct URL; None for a Hugging Face file (built from repo and revision)


@dataclass(frozen=True)
class WeightEntry:
    name: str                   # what `sao weights fetch NAME` takes
    stage: str                  # the pipeline stage that needs it (a key of STAGES)
    folder: str                 # its folder under the models dir
    files: tuple[WeightFile, ...]
    hf_repo: str | None = None  # "owner/name" for Hugging Face files
    revision: str = "main"      # a commit pins the bytes the digests describe
    gated: bool = False         # the repo needs an accepted licence and a token
    license: str = ""
    source: str = ""            # where the digests come from


# stage -> (what it is, the entries it needs to run calibrated)
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "music_screen": ("music screen (PANNs Cnn14_DecisionLevelMax)", ("panns",)),
    "dedup": ("near-replica dedup (LAION-CLAP audio tower)", ("clap",)),
    "dit_text_encoder": ("DiT text encoder (T5-base)", ("t5-base",)),
    "sao_weights": ("Stable Audio Open 1.0 weights (generate / fine-tune; with T5-base)",
                    ("stable-audio-open-1.0", "t5-base")),
}

ENTRIES: tuple[WeightEntry, ...] = (
    WeightEntry(
        name="panns", stage="music_screen", folder="panns",
        files=(WeightFile("Cnn14_DecisionLevelMax_mAP=0.385.pth", "md5", "70539c43c18b6a289b3199c503a82c5a",
                          327_428_481,
                          url="https://zenodo.org/record/3987831/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth"
                              "?download=1"),),
        license="CC-BY-4.0 (Zenodo record 3987831)",
        source="md5 and size as Zenodo record 3987831 publishes them"),
    WeightEntry(
        # the non-fusion HTSAT-tiny checkpoint: sao.analysis.clap loads only non-fusion audio towers,
        # and [dedup].clap_model defaults to HTSAT-tiny
        name="clap", stage="dedup", folder="clap", hf_repo="lukewys/laion_clap",
        files=(WeightFile("630k-audioset-best.pt", "sha256",
                          "8053c9775516af2f4902e1e8281e356cc1bf7a85e8b761908170767b77c3f037", 1_863_587_645),),
        license="CC0-1.0 (the Hugging Face repo's card)",
        source="Hugging Face LFS sha256 of lukewys/laion_clap main"),
    WeightEntry(
        # what T5Conditioner reads from its folder: AutoTokenizer (config.json names the T5 fast tokenizer,
        # tokenizer.json; spiece.model for the slow one) and T5EncoderModel (config.json, model.safetensors)
        name="t5-base", stage="dit_text_encoder", folder="t5-base", hf_repo="google-t5/t5-base",
        revision="a9723ea7f1b39c1eae772870f3b547bf6ef7e6c1",
        files=(WeightFile("config.json", "sha256",
                          "46dd7cb62d29c81fb551e0ef1ea274c24a46ba441eeb948897706252933df033", 1_208),
               WeightFile("model.safetensors", "sha256",
                          "a90903540cc02cbeb7ff9f823f1a80eb778c7e22426a0e620b01c77a5ec8f5b4", 891_646_390),
               WeightFile("spiece.model", "sha256",
                          "d60acb128cf7b7f2536e8f38a5b18a05535c9e14c7a355904270e15b0945ea86", 791_656),
               WeightFile("tokenizer.json", "sha256",
                          "d2acde0d8d71dd30a711834b07781b9c89feaac33fd332f60507699282740066", 1_389_353)),
        license="Apache-2.0",
        source="sha256 of google-t5/t5-base at the pinned revision"),
    WeightEntry(
        name="stable-audio-open-1.0", stage="sao_weights", folder="stable-audio-open-1.0",
        hf_repo="stabilityai/stable-audio-open-1.0", gated=True,
        files=(WeightFile("model.safetensors", "sha256",
                          "7b20458a071231aaf32613b6fbc7945f28f34dbba4f295bb49bad56f5f66b57e", 4_853_889_016),
               # no published digest found for the config: --expect names it
               WeightFile("model_config.json", "sha256", None)),
        license="Stability AI Community License (gated: accept it on huggingface.co)",
        source="Hugging Face LFS sha256 of model.safetensors"),
)


class UnknownWeights(ValueError):
    """A name that is not in the table."""


def entry(name: str) -> WeightEntry:
    for e in ENTRIES:
        if e.name == name:
            return e
    raise UnknownWeights(f"weights {name!r}: not in the table (known: {', '.join(e.name for e in ENTRIES)})")


def key(e: WeightEntry, f: WeightFile) -> str:
    """The file's key in the lock file."""
    return f"{e.name}/{f.name}"


def file_path(models_dir: str | pathlib.Path, e: WeightEntry, f: WeightFile) -> pathlib.Path:
    """Where the file lives: refused (UnsafePathError) if a folder or name would leave ``models_dir``."""
    return safe_join(models_dir, e.folder, f.name, what=f"weights {e.name!r} file")


def file_url(e: WeightEntry, f: WeightFile, *, hf_endpoint: str = HF_ENDPOINT, mirror: str | None = None) -> str:
    """The download URL. A mirror replaces the scheme and host of every URL (Zenodo's too) and keeps the
    path: tests point everything at a loopback server this way."""
    from urllib.parse import urlsplit
    if f.url is not None:
        url = f.url
    elif e.hf_repo:
        url = f"{hf_endpoint.rstrip('/')}/{e.hf_repo}/resolve/{e.revision}/{f.name}"
    else:
        raise ValueError(f"weights {e.name!r} file {f.name!r}: no URL and no Hugging Face repo")
    if mirror:
        parts = urlsplit(url)
        url = mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    return url


def check_digest(kind: str, value: object, *, what: str) -> str:
    """A digest value as lower-case hex of the length its kind has; ValueError naming WHAT otherwise."""
    if kind not in DIGEST_KINDS:
        raise ValueError(f"{what}: unknown digest kind {kind!r} (known: {', '.join(DIGEST_KINDS)})")
    v = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(v, str) or len(v) != DIGEST_KINDS[kind] or not _HEX.fullmatch(v):
        raise ValueError(f"{what}: {value!r} is not a {kind} digest ({DIGEST_KINDS[kind]} hex characters)")
    return v


def stage_entries(stage: str) -> tuple[WeightEntry, ...]:
    return tuple(entry(n) for n in STAGES[stage][1])


def config_hints(models_dir: str | pathlib.Path) -> list[tuple[str, str]]:
    """(stage, where the pipeline is told about the fetched files): a config setting where the project has
    one, else the option or environment variable that the loader reads."""
    d = pathlib.Path(models_dir)
    t5 = d / "t5-base"
    sao = d / "stable-audio-open-1.0"
    return [
        ("music_screen", f'[music_screen].checkpoint = "{d / "panns" / "Cnn14_DecisionLevelMax_mAP=0.385.pth"}"'),
        ("dedup", f'[dedup].clap_checkpoint = "{d / "clap" / "630k-audioset-best.pt"}"  '
                  '(with [dedup].clap_model = "HTSAT-tiny")'),
        ("dit_text_encoder", f"no config setting: pass --t5-path {t5} (or export SAO_T5_PATH={t5})"),
        ("sao_weights", f"no config setting: sao generate --ckpt {sao / 'model.safetensors'} "
                        f"--t5-path {t5}"),
    ]
