"""Publishable descriptions of a release and of a checkpoint, in the forms datasets and models are
published in today: MLCommons Croissant JSON-LD (``croissant.json``), a Hugging Face dataset card
(``README.md`` with its YAML header) and a model card per checkpoint (``<checkpoint>.card.md``).

Pure functions from the release summary (``report.summary``) or a checkpoint's attribution
manifest to text: the report writes them beside its files, the trainer beside each checkpoint.
Licenses are SPDX identifiers everywhere (``licensing.table.spdx_id``); the one exception is the
card's YAML ``license`` key, which the Hub only accepts in its own (lowercase) spelling.
"""
from __future__ import annotations

import json
from typing import Any

from ..licensing.table import BY_ID, BY_SPDX, spdx_id

CROISSANT_CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
CROISSANT_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath",
    "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform",
}

# the columns of attribution-tasl.csv (report._write_csvs), with their Croissant types
TASL_FIELDS = (("recording_id", "sc:Text", "the recording: <source>:<id>"),
               ("source", "sc:Text", "where it was collected (freesound, fma, ...)"),
               ("id", "sc:Text", "its id at the source"),
               ("title", "sc:Text", "its title"), ("author", "sc:Text", "its author"),
               ("source_url", "sc:URL", "its page at the source"),
               ("license", "sc:Text", "its license, as an SPDX identifier"),
               ("license_name", "sc:Text", "the license's name with version, as the source names it"),
               ("license_url", "sc:URL", "the license deed"),
               ("attribution_line", "sc:Text", "the attribution line to publish with anything made from it"))

# Hugging Face's license ids for the admitted licenses; Sampling+ has none there ("other" + its link)
HF_LICENSES = {"cc0-1.0": "cc0-1.0", "cc-by-4.0": "cc-by-4.0", "cc-by-3.0": "cc-by-3.0"}


def release_spdx_ids(s: dict[str, Any]) -> list[str]:
    """The release's licenses as SPDX ids, most permissive first (the license table's order)."""
    canon = {r["license_canonical"] for r in s["table"]}
    return [spdx_id(c) for c in sorted(canon, key=lambda c: BY_ID[c].rank)]


def _description(s: dict[str, Any]) -> str:
    rel = s["release"]
    by = ", ".join(f"{r['recordings']} from {r['source']}" for r in s["by_source"])
    return (f"Release {rel['name']} of the sao pipeline: {s['total']['recordings']} audio recordings ({by}), each "
            "admitted under CC0, CC BY or CC Sampling+ by the license gate, screened for music by PANNs "
            "(Freesound) or matched against a copyrighted-music catalogue (FMA), and de-duplicated with "
            "LAION-CLAP embeddings, as the Stable Audio Open paper describes. One row per recording with its "
            "license and attribution.")


def croissant(s: dict[str, Any], csv_sha256: str, *, csv_name: str = "attribution-tasl.csv",
              url: str = "") -> dict[str, Any]:
    """Croissant 1.0 JSON-LD of a release: the TASL attribution CSV as its one file, one record per
    recording with its license, and the responsible-AI (RAI) fields that apply to a curated corpus."""
    rel = s["release"]
    excluded = {k: v for k, v in s["exclusions"].items() if v}
    fields = [{"@type": "cr:Field", "@id": f"recordings/{name}", "name": name, "description": desc, "dataType": dtype,
               "source": {"fileObject": {"@id": "attribution-tasl"}, "extract": {"column": name}}}
              for name, dtype, desc in TASL_FIELDS]
    licenses = [BY_SPDX[x].deed_url for x in release_spdx_ids(s)]
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "name": f"sao-{rel['name']}",
        "description": _description(s),
        "conformsTo": CROISSANT_CONFORMS_TO,
        "url": url or "https://example.invalid/sao",
        "version": "1.0.0",
        "datePublished": str(rel.get("created_at") or "")[:10],
        "license": licenses,
        "creator": {"@type": "sc:Organization", "name": "sao pipeline"},
        "keywords": ["audio", "text-to-audio", "Creative Commons", "attribution"],
        "citeAs": "Evans et al., Stable Audio Open, 2024 (arXiv:2407.14358): the curation this release reproduces",
        "distribution": [{"@type": "cr:FileObject", "@id": "attribution-tasl", "name": "attribution-tasl",
                          "description": "one row per recording: title, author, source, license (TASL)",
                          "contentUrl": csv_name, "encodingFormat": "text/csv", "sha256": csv_sha256}],
        "recordSet": [{"@type": "cr:RecordSet", "@id": "recordings", "name": "recordings",
                       "description": "the recordings of the release, one per row, each with its own license",
                       "key": {"@id": "recordings/recording_id"}, "field": fields}],
        "rai:dataCollection": (
            "Metadata crawled from the Freesound API and the Free Music Archive metadata release; audio "
            "downloaded per recording; every curation decision (license gate, music screen, copyright review, "
            "duplicate groups) recorded with the model, checkpoint checksum and threshold that made it."),
        "rai:dataCollectionType": ["Web Scraping", "Manual Human Curation"],
        "rai:dataPreprocessingProtocol": (
            "License allow-list (CC0, CC BY, CC Sampling+; exact match); Freesound recordings with >= 30 s of "
            "AudioSet music classes at threshold 0.15 sent to copyright review; FMA metadata matched against a "
            "copyrighted-music catalogue with human review; near-duplicates grouped by LAION-CLAP embeddings. "
            f"Excluded from this release: {json.dumps(excluded, sort_keys=True) if excluded else 'none'}."),
        "rai:dataLimitations": (
            "Sound effects and field recordings dominate; music is under-represented because copyrighted "
            "material is screened out. Metadata (titles, tags, descriptions) is the uploaders' own."),
        "rai:dataBiases": (
            "Uploaders of Freesound and FMA are not a balanced sample of the world's sounds or music; prompts "
            "built from their metadata inherit their language (mostly English) and vocabulary."),
        "rai:personalSensitiveInformation": (
            "Recordings may contain voices; author names are published as the licenses require attribution."),
        "rai:dataUseCases": "Training and evaluating text-to-audio models, with the attribution each license asks.",
        "rai:dataSocialImpact": (
            "Each recording's license and attribution travel with it, so models trained on it can be published "
            "with proof of what trained them; take-downs exclude a recording from later releases."),
        "rai:dataReleaseMaintenancePlan": (
            "Releases are immutable and signed; a new release is built on schedule, and `sao release diff` "
            "lists what was added, removed (and why) and changed."),
    }


def size_category(n: int) -> str:
    """The Hub's size_categories value for n rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "n>10M" if n >= 1_000_000_000 else "10M<n<100M" if n < 100_000_000 else "100M<n<1B"


def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {json.dumps(v)}" for v in values]


def dataset_card(s: dict[str, Any], files: dict[str, int]) -> str:
    """A Hugging Face dataset card (README.md): YAML metadata (licenses, size, task) and the facts."""
    spdx = release_spdx_ids(s)
    hf = [HF_LICENSES.get(BY_SPDX[x].canonical, "other") for x in spdx]
    head = ["---", *_yaml_list("license", sorted(set(hf), key=hf.index))]
    if "other" in hf:
        other = [BY_SPDX[x] for x in spdx if HF_LICENSES.get(BY_SPDX[x].canonical) is None]
        head += [f"license_name: {json.dumps(other[0].spdx.lower())}", f"license_link: {json.dumps(other[0].deed_url)}"]
    head += [*_yaml_list("task_categories", ["text-to-audio"]), *_yaml_list("language", ["en"]),
             *_yaml_list("size_categories", [size_category(s["total"]["recordings"])]),
             *_yaml_list("tags", ["audio", "creative-commons", "attribution", "croissant"]),
             f"pretty_name: {json.dumps('sao release ' + s['release']['name'])}", "---", ""]
    rel = s["release"]
    lines = [f"# sao release {rel['name']}", "", _description(s), "",
             "## Licenses", "", "| source | license (SPDX) | license | recordings | hours |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['source']} | {spdx_id(r['license_canonical'])} | {r['license']} | {r['recordings']} | "
              f"{r['hours_text']} |" for r in s["table"]]
    lines += ["", "## Files", "",
              "- `attribution-tasl.csv`: every recording with title, author, source link and license (SPDX id): "
              "the attribution to publish with anything trained on this release",
              *(f"- `attribution-{src}.csv`: {n} recordings in the published Stable Audio Open format" for src, n in
                sorted(files.items())),
              "- `croissant.json`: MLCommons Croissant metadata (record set `recordings`, RAI fields)",
              "- `index.html`, `report.md`: the attribution report (tables and plots)",
              "", "## Curation", "",
              "Excluded recordings, by reason: " + (", ".join(f"{k} {v}" for k, v in s["exclusions"].items() if v)
                                                    or "none") + ".",
              f"Content hash (signed with the release): `{rel.get('content_hash') or rel.get('content_sha256') or ''}`.",
              ""]
    return "\n".join(head + lines)


def model_card(manifest: dict[str, Any], checkpoint_name: str) -> str:
    """A model card for one checkpoint, from its attribution manifest: what trained it (release,
    shards build), the license mix and the attribution files to publish with it."""
    counts = manifest.get("counts") or {}
    mix: dict[str, int] = {}
    for r in manifest.get("recordings") or []:
        mix[r["license"]] = mix.get(r["license"], 0) + 1
    spdx = sorted(mix, key=lambda x: BY_SPDX[x].rank if x in BY_SPDX else 99)
    hf = [HF_LICENSES.get(BY_SPDX[x].canonical, "other") if x in BY_SPDX else "other" for x in spdx]
    build = manifest.get("shards_build") or {}
    rel = build.get("release") or {}
    rel_name = rel.get("name") if isinstance(rel, dict) else rel
    head = ["---", *_yaml_list("license", sorted(set(hf), key=hf.index) or ["other"]),
            *(["pipeline_tag: text-to-audio"] if manifest.get("stage") == "dit" else []),
            *_yaml_list("tags", ["audio", "sao", manifest.get("stage") or "checkpoint"]),
            *(_yaml_list("datasets", [f"sao-{rel_name}"]) if rel_name else []), "---", ""]
    lines = [f"# {checkpoint_name}", "",
             f"{'Diffusion transformer' if manifest.get('stage') == 'dit' else 'Autoencoder'} checkpoint at step "
             f"{manifest.get('step')}, trained by sao on release {rel_name or '(none: a shards build of the catalogue)'} "
             f"(shards build {build.get('name')}, plan {str(build.get('plan_hash') or '')[:12]}).", "",
             f"Weights digest ({(manifest.get('weights') or {}).get('digest', 'sao-tensors/1')}): "
             f"`{(manifest.get('weights') or {}).get('sha256', '')}`; "
             f"{(manifest.get('signing') or {}).get('status', 'unsigned')} checkpoint.", "",
             "## Training data licenses", "", "| license (SPDX) | recordings |", "|---|---:|"]
    lines += [f"| {x} | {mix[x]} |" for x in spdx]
    lines += ["", f"{counts.get('recordings', len(manifest.get('recordings') or []))} recordings, "
              f"{counts.get('samples', '?')} samples, {len(manifest.get('shards') or [])} shards.", "",
              "## Attribution", "",
              f"- `{checkpoint_name.rsplit('.', 1)[0]}.manifest.json`: every recording that trained these weights, "
              "with its license and attribution line, and every shard with its sha256 (`sao manifest verify`)",
              f"- the release's attribution report (`attribution/releases/{rel_name or 'NAME'}/`): "
              "`attribution-tasl.csv`, the per-source CSVs and `croissant.json`",
              "", "Anything published from these weights must carry the attribution lines of the CC BY and "
              "CC Sampling+ recordings above.", ""]
    return "\n".join(head + lines)
