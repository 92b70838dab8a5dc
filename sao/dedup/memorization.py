"""Memorisation analysis (paper section 5.3): embed generated audio, find each generation's
nearest training recordings, keep the top generations closest to the training set, and write
an HTML page that plays each candidate beside its nearest training recordings, with their
similarity and attribution, for a person to listen to."""
from __future__ import annotations

import html
import pathlib
import shutil
from typing import Any

import numpy as np

from ..attribution.report import link_url
from ..fsutil import atomic_write_text

AUDIO_EXT = (".wav", ".flac", ".ogg", ".oga", ".mp3")


def nearest(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train, np.float32))
    return index.search(np.ascontiguousarray(queries, np.float32), min(k, len(train)))


def write_report(out_dir: pathlib.Path, candidates: list[dict[str, Any]], *, model_note: str) -> pathlib.Path:
    media = out_dir / "media"
    media.mkdir(parents=True, exist_ok=True)

    def copy(src: str, prefix: str) -> str:
        name = f"{prefix}-{pathlib.Path(src).name}"
        shutil.copyfile(src, media / name)
        return f"media/{html.escape(name)}"

    rows = []
    for rank, c in enumerate(candidates, 1):
        gen = copy(c["path"], f"gen{rank:03d}")
        cells = []
        for j, m in enumerate(c["neighbours"]):
            a = m["attribution"]
            src = copy(m["path"], f"gen{rank:03d}-train{j}")
            url = a.get("source_url")
            href = link_url(url)            # only http(s) becomes a link; anything else is shown as text
            source = (f"<a href='{html.escape(href)}'>source</a>" if href
                      else f"source: {html.escape(url)}" if isinstance(url, str) and url else "")
            cells.append(
                f"<div class='nb'><audio controls preload='none' src='{src}'></audio>"
                f"<div><b>{m['similarity']:.3f}</b> &middot; {html.escape(m['recording_id'])}</div>"
                f"<div>&ldquo;{html.escape(str(a.get('title') or ''))}&rdquo; by "
                f"{html.escape(str(a.get('author') or ''))}, "
                f"{html.escape(str(a.get('license') or ''))} {source}</div></div>")
        rows.append(f"<tr><td>{rank}</td><td><div>{html.escape(pathlib.Path(c['path']).name)}</div>"
                    f"<audio controls preload='none' src='{gen}'></audio></td><td>{c['score']:.3f}</td>"
                    f"<td>{''.join(cells)}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Memorisation candidates</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{vertical-align:top;padding:.5em;border-top:1px solid #ccc}}
.nb{{margin-bottom:.8em}} .note{{background:#fff3cd;padding:.5em}}</style></head><body>
<h1>Memorisation candidates</h1>
<p class="note">{html.escape(model_note)}</p>
<p>The {len(candidates)} generations closest to the training set (cosine similarity of LAION-CLAP audio
embeddings), each with its nearest training recordings. Listen and judge: a high similarity is a reason
to listen, not a verdict.</p>
<table><tr><th>#</th><th>generation</th><th>max similarity</th><th>nearest training recordings</th></tr>
{''.join(rows)}</table></body></html>"""
    out = out_dir / "index.html"
    atomic_write_text(out, page)
    return out


def memorization_report(generated_dir: str | pathlib.Path, cm, train: dict[str, np.ndarray],
                        recordings: dict[str, dict[str, Any]], out_dir: str | pathlib.Path, *, top: int = 50,
                        k: int = 3, batch_size: int = 8) -> dict[str, Any]:
    from ..analysis.clap import embed_files
    files = sorted(str(p) for p in pathlib.Path(generated_dir).rglob("*") if p.suffix.lower() in AUDIO_EXT)
    if not files:
        raise ValueError(f"{generated_dir}: no audio files ({', '.join(AUDIO_EXT)})")
    shas = [s for s in sorted(train) if s in recordings]
    if not shas:
        raise ValueError("no embedded training recordings: run `sao embed` first")
    gen = embed_files(cm, files, batch_size=batch_size)
    names = [f for f in files if f in gen]
    sims, ids = nearest(np.stack([train[s] for s in shas]), np.stack([gen[f] for f in names]), k)
    order = np.argsort(-sims[:, 0])[:top]
    candidates = []
    for qi in order:
        neigh = []
        for s, ti in zip(sims[qi], ids[qi]):
            rec = recordings[shas[ti]]
            neigh.append({"similarity": float(s), "recording_id": rec["recording_id"], "path": rec["path"],
                          "attribution": rec["attribution"]})
        candidates.append({"path": names[qi], "score": float(sims[qi, 0]), "neighbours": neigh})
    note = ("UNCALIBRATED: random CLAP weights; similarities are meaningless" if cm.uncalibrated
            else f"CLAP {cm.amodel}, checkpoint sha256 {cm.checkpoint_sha256}")
    page = write_report(pathlib.Path(out_dir), candidates, model_note=note)
    return {"generations": len(names), "candidates": len(candidates), "page": str(page),
            "max_similarity": float(sims[:, 0].max()), "uncalibrated": cm.uncalibrated}


def memorization_for_config(cfg, generated_dir: str, out_dir: str, *, top: int = 50, k: int = 3,
                            uncalibrated: bool | None = None) -> dict[str, Any]:
    """`sao memorization`: the page for GENERATED_DIR against the configured catalogue's admitted audio,
    embedded with the configured CLAP model (the embeddings the dedup stage stored)."""
    import json as _json

    from ..catalog import Catalog
    from ..fsutil import safe_join
    from ..pipeline.stages.embed import load_clap_for
    from .stage import admitted
    from .store import load_embeddings
    cm = load_clap_for(cfg, uncalibrated)
    train = load_embeddings(cfg.path(cfg.dedup.embeddings_dir), cm.signature)
    store = cfg.path(cfg.paths.audio_store)
    with Catalog(cfg.catalog_path) as cat:
        recs = {r["content_sha256"]: {
            "recording_id": r["recording_id"], "path": str(safe_join(store, r["audio_path"], what="audio_path")),
            "attribution": _json.loads(r["attribution"]) if r["attribution"] else {
                "title": r["title"] or "", "author": r["author"] or "", "license": r["license_canonical"],
                "source_url": r["page_url"] or ""}} for r in admitted(cat)}
    return memorization_report(generated_dir, cm, train, recs, out_dir, top=top, k=k, batch_size=cfg.dedup.batch_size)
