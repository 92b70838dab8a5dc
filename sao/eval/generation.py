"""`sao eval generate`: one generation per caption, then FD, KL and the CLAP score (paper tables
1, 2 and 5), with per-prompt results kept so the tables can be split by prompt.

Prompts file: CSV (columns ``id``, ``caption`` and optionally ``audio``, the reference recording's
path relative to the file), JSONL with the same keys, or plain text (one caption per line). As in
the paper, every generation is made at ``seconds_total`` (the model fills the rest of its window
with silence) and trimmed to ``trim_seconds`` from its start.
"""
from __future__ import annotations

import csv
import json
import logging
import pathlib
import time
from typing import Any, Sequence


from . import metrics

log = logging.getLogger(__name__)


class PromptsError(ValueError):
    pass


def read_prompts(path: str | pathlib.Path) -> list[dict[str, Any]]:
    from ..fsutil import UnsafePathError, safe_join, safe_name
    p = pathlib.Path(path)
    if not p.is_file():
        raise PromptsError(f"{p}: prompts file not found")
    rows: list[dict[str, Any]] = []
    if p.suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif p.suffix == ".jsonl":
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise PromptsError(f"{p}:{n}: not JSON: {exc}") from None
    else:
        rows = [{"caption": line.strip()} for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    out, seen = [], set()
    for n, r in enumerate(rows, 1):
        caption = str(r.get("caption") or "").strip()
        if not caption:
            raise PromptsError(f"{p}: prompt {n} has no caption")
        pid = str(r.get("id") or f"{n:05d}")
        if not pid.replace("-", "").replace("_", "").replace(".", "").isalnum() or pid in seen:
            raise PromptsError(f"{p}: prompt {n}: id {pid!r} must be unique and use letters, digits, '.', '_', '-'")
        try:                              # the id names the output file <id>.wav
            safe_name(pid, what=f"prompt {n} id")
        except UnsafePathError as exc:
            raise PromptsError(f"{p}: {exc}") from None
        seen.add(pid)
        ref = r.get("audio")
        out.append({"id": pid, "caption": caption,
                    "reference": str(safe_join(p.parent, ref)) if ref else None})
    if not out:
        raise PromptsError(f"{p}: no prompts")
    return out


def generate_clips(model, prompts: list[dict[str, Any]], out_dir: pathlib.Path, *, seconds_total: float,
                   trim_seconds: float, steps: int, cfg_scale: float, seed: int, batch_size: int = 4,
                   on_batch=None) -> tuple[list[str], float]:
    """Write ``out_dir/<id>.wav`` per prompt (existing files are kept: resumable). Returns (paths, seconds)."""
    import soundfile as sf

    from ..fsutil import atomic_path
    from ..models.sampling import generate
    out_dir.mkdir(parents=True, exist_ok=True)
    from ..fsutil import safe_join
    paths = [safe_join(out_dir, f"{p['id']}.wav", what="prompt id") for p in prompts]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    t0 = time.perf_counter()
    n = int(round(trim_seconds * model.sample_rate))
    for b in range(0, len(todo), batch_size):
        idx = todo[b:b + batch_size]
        audio = generate(model, [prompts[i]["caption"] for i in idx], seconds_total=seconds_total, steps=steps,
                         cfg_scale=cfg_scale, seed=seed + idx[0])
        for i, a in zip(idx, audio):
            with atomic_path(paths[i]) as tmp:
                sf.write(str(tmp), a[:, :n].clamp(-1, 1).T.numpy(), model.sample_rate, subtype="PCM_16", format="WAV")
        if on_batch:
            on_batch(len(idx))
    return [str(p) for p in paths], time.perf_counter() - t0


def score(prompts: list[dict[str, Any]], generated: Sequence[str], *, fd_embedder=None, tagger=None,
          clap=None) -> dict[str, Any]:
    """FD (reference vs generated embedding sets), KL per caption and CLAP score per caption.
    ``clap`` is (ClapAudio, ClapText). A metric whose model or references are missing is left out."""
    from ..audio import load

    def clips(paths):                  # decoded one at a time: thousands of clips never sit in memory
        return (load(x) for x in paths)

    captions = [p["caption"] for p in prompts]
    paired = [i for i, p in enumerate(prompts) if p["reference"]]
    refs = [prompts[i]["reference"] for i in paired]
    per = [{"id": p["id"], "caption": p["caption"], "speech": metrics.has_speech(p["caption"]),
            "connector": metrics.has_connector(p["caption"])} for p in prompts]
    out: dict[str, Any] = {"embedders": {}, "seconds": {}}
    gen_audio = None
    if clap is not None:
        audio_e, text_e = clap
        t = time.perf_counter()
        gen_audio = audio_e.embed(clips(generated))
        sims = metrics.cosine(gen_audio, text_e.embed(captions))
        out["seconds"]["clap_score"] = time.perf_counter() - t
        out["embedders"]["clap_score"] = text_e.name
        for row, s in zip(per, sims):
            row["clap_score"] = float(s)
    if tagger is not None and paired:
        t = time.perf_counter()
        kl = metrics.kl_generated_vs_reference(tagger.logits(clips(generated[i] for i in paired)),
                                               tagger.logits(clips(refs)))
        out["seconds"]["kl"] = time.perf_counter() - t
        out["embedders"]["kl"] = tagger.name
        for i, v in zip(paired, kl):
            per[i]["kl"] = float(v)
    if fd_embedder is not None and len(paired) >= 2:
        t = time.perf_counter()
        # the CLAP score's audio embeddings serve FD too when the same embedder is named for both
        gen_fd = gen_audio if clap is not None and fd_embedder is clap[0] else fd_embedder.embed(clips(generated))
        out["fd"] = metrics.fd(fd_embedder.embed(clips(refs)), gen_fd)
        out["seconds"]["fd"] = time.perf_counter() - t
        out["embedders"]["fd"] = fd_embedder.name
    out["prompts"] = per
    return out


def tables(scored: dict[str, Any]) -> dict[str, Any]:
    """The main row (FD, KL, CLAP score) and table 5's rows (CLAP score by prompt subset)."""
    per = scored["prompts"]
    subsets = metrics.table5_subsets([p["caption"] for p in per])
    main = {"fd": scored.get("fd"), "kl": metrics.mean(p["kl"] for p in per if "kl" in p) if any("kl" in p for p in per)
            else None, "clap_score": metrics.mean(p["clap_score"] for p in per if "clap_score" in p)
            if any("clap_score" in p for p in per) else None, "files": len(per)}
    t5 = [{"subset": name, "clap_score": metrics.mean(per[i]["clap_score"] for i in idx if "clap_score" in per[i])
           if idx and "clap_score" in per[idx[0]] else None, "files": len(idx)} for name, idx in subsets.items()]
    return {"main": main, "table5": t5}


def save(out_dir: pathlib.Path, result: dict[str, Any]) -> dict[str, str]:
    """results.json and per-prompt prompts.jsonl (atomic writes)."""
    from ..fsutil import atomic_write_text
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "prompts.jsonl", "".join(json.dumps(p) + "\n" for p in result["scores"]["prompts"]))
    atomic_write_text(out_dir / "results.json", json.dumps({k: v for k, v in result.items() if k != "scores"} |
                                                          {"embedders": result["scores"]["embedders"]},
                                                          indent=1, default=str))
    return {"results": str(out_dir / "results.json"), "prompts": str(out_dir / "prompts.jsonl")}


def run(checkpoint: str | None, prompts_file: str, out_dir: str | pathlib.Path, *, model_config: str = "tiny",
        t5_path: str | None = None, uncalibrated: bool = False, seconds_total: float = 10.0,
        trim_seconds: float = 10.0, steps: int = 100, cfg_scale: float = 7.0, seed: int = 0, batch_size: int = 4,
        clap_checkpoint: str | None = None, clap_model: str = "HTSAT-tiny", panns_checkpoint: str | None = None,
        limit: int | None = None, dataset: str = "audiocaps", device: str | None = None) -> dict[str, Any]:
    from ..analysis.panns import load_model as load_panns
    from ..log import progress
    from ..models import create_model
    from ..models.checkpoint import load_checkpoint, sha256_file
    from . import report
    from .embedders import PannsTagger, load_clap_scorer
    if not checkpoint and not uncalibrated:
        raise PromptsError("no model checkpoint: pass one, or --uncalibrated to score random weights (marked so)")
    prompts = read_prompts(prompts_file)[:limit]
    out = pathlib.Path(out_dir)
    model = create_model(model_config, t5_path=t5_path)
    window = model.sample_size / model.sample_rate
    if seconds_total > window or trim_seconds > window:
        # the model cannot make more than its window: say what was made instead of pretending
        log.warning("%s generates at most %.2f s; clips are %.2f s, not %.2f s", model_config, window,
                    min(window, trim_seconds), trim_seconds)
        seconds_total, trim_seconds = min(seconds_total, window), min(trim_seconds, window)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    bar = progress(total=len(prompts), desc="generate", unit="clip")
    paths, gen_s = generate_clips(model, prompts, out / "generated", seconds_total=seconds_total,
                                  trim_seconds=trim_seconds, steps=steps, cfg_scale=cfg_scale, seed=seed,
                                  batch_size=batch_size, on_batch=bar.update)
    bar.close()
    clap = load_clap_scorer(clap_checkpoint, amodel=clap_model, uncalibrated=uncalibrated, device=device)
    tagger = PannsTagger(load_panns(panns_checkpoint, uncalibrated=uncalibrated, device=device))
    scores = score(prompts, paths, fd_embedder=clap[0], tagger=tagger, clap=clap)
    result = {"kind": "generation", "prompts_file": str(prompts_file), "model_config": model_config,
              "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
              "uncalibrated": not checkpoint or not clap_checkpoint or not panns_checkpoint,
              "sample_rate": model.sample_rate, "seconds_total": seconds_total, "trim_seconds": trim_seconds,
              "steps": steps, "cfg_scale": cfg_scale, "seed": seed, "generation_seconds": round(gen_s, 2),
              "scores": scores}
    result["tables"] = tables(scores)
    files = save(out, result)
    files.update(report.write_report(out, f"Generation evaluation: {pathlib.Path(prompts_file).name}",
                                     report.generation_tables(result, dataset)))
    result["files"] = files
    return result
