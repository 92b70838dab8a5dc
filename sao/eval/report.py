"""Markdown and HTML tables of an evaluation, shaped like the paper's, with the paper's published
rows beside ours (marked "published", copied from the paper's tables) and the model behind every
metric named under the table."""
from __future__ import annotations

import html
import pathlib
from typing import Any

# Stable Audio Open paper, tables 1-5, as published
PAPER_GENERATION = {
    "audiocaps": ("Table 1, AudioCaps (sounds)", ["model", "channels/sr", "length", "FD_openl3", "KL_passt", "CLAP score"], [
        ["AudioLDM2-48kHz", "1/48kHz", "10 sec", 101.11, 2.04, 0.37],
        ["AudioLDM2-large", "1/16kHz", "10 sec", 170.31, 1.57, 0.41],
        ["AudioGen-medium", "1/16kHz", "10 sec", 186.53, 1.42, 0.45],
        ["Stable Audio 1.0", "2/44.1kHz", "95 sec", 103.66, 2.89, 0.24],
        ["Stable Audio 2.0", "2/44.1kHz", "190 sec", 116.14, 2.67, 0.24],
        ["Stable Audio 2.0", "2/44.1kHz", "285 sec", 110.62, 2.70, 0.23],
        ["Stable Audio Open", "2/44.1kHz", "47 sec", 78.24, 2.14, 0.29]]),
    "songdescriber": ("Table 2, Song Describer (instrumental music)", ["model", "channels/sr", "length", "FD_openl3", "KL_passt", "CLAP score"], [
        ["MusicGen-large-stereo", "2/32kHz", "47", 190.47, 0.52, 0.31],
        ["Stable Audio 1.0", "2/44.1kHz", "95 sec", 142.50, 0.40, 0.38],
        ["Stable Audio 2.0", "2/44.1kHz", "190 sec", 71.25, 0.37, 0.42],
        ["Stable Audio 2.0", "2/44.1kHz", "285 sec", 81.05, 0.39, 0.42],
        ["Stable Audio Open", "2/44.1kHz", "47", 96.51, 0.55, 0.41]]),
}
PAPER_AUTOENCODER = {
    "audiocaps": ("Table 3, autoencoder reconstructions, AudioCaps (sounds)", [
        ["DAC", "44.1kHz", 1.04, 0.63, 5.05, "86Hz", "discrete"],
        ["AudioGen", "48kHz", 1.10, 0.62, 4.60, "50Hz", "discrete"],
        ["Encodec", "32kHz", 1.82, 1.12, 5.33, "50Hz", "discrete"],
        ["AudioGen", "48kHz", 1.22, 0.73, 2.04, "100Hz", "continuous (32)"],
        ["Stable Audio 1.0", "44.1kHz", 1.32, 0.86, 1.81, "43Hz", "continuous (64)"],
        ["Stable Audio 2.0", "44.1kHz", 1.21, 0.85, 0.33, "21.5Hz", "continuous (64)"],
        ["Stable Audio Open", "44.1kHz", 1.25, 0.86, -0.93, "21.5Hz", "continuous (64)"]]),
    "songdescriber": ("Table 4, autoencoder reconstructions, Song Describer (instrumental music)", [
        ["DAC", "44.1kHz", 0.96, 0.53, 11.30, "86Hz", "discrete"],
        ["AudioGen", "48kHz", 1.16, 0.66, 9.64, "50Hz", "discrete"],
        ["Encodec", "32kHz", 1.70, 1.09, 5.75, "50Hz", "discrete"],
        ["AudioGen", "48kHz", 1.10, 0.65, 9.21, "100Hz", "continuous (32)"],
        ["Stable Audio 1.0", "44.1kHz", 1.20, 0.67, 9.12, "43Hz", "continuous (64)"],
        ["Stable Audio 2.0", "44.1kHz", 1.21, 0.72, 7.65, "21.5Hz", "continuous (64)"],
        ["Stable Audio Open", "44.1kHz", 1.29, 0.77, 6.28, "21.5Hz", "continuous (64)"]]),
}
AE_COLUMNS = ["model", "sampling rate", "STFT distance ↓", "MEL distance ↓", "SI-SDR ↑", "latent rate", "latent (channels)"]
PAPER_TABLE5 = [["AudioCaps", 0.29, 4875], ["– no speech prompts", 0.31, 2765], ["– no connectors prompts", 0.32, 711],
                ["– no speech & connectors", 0.34, 587]]


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _md(title: str, cols: list[str], rows: list[list[Any]], notes: list[str]) -> str:
    out = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out + [""] + [f"- {n}" for n in notes] + [""])


def _html(title: str, cols: list[str], rows: list[list[Any]], notes: list[str], ours: int) -> str:
    e = html.escape
    body = "".join(f"<tr class='{'ours' if i >= ours else 'published'}'>" + "".join(f"<td>{e(_fmt(c))}</td>" for c in r)
                   + "</tr>" for i, r in enumerate(rows))
    return (f"<h3>{e(title)}</h3><table><thead><tr>{''.join(f'<th>{e(c)}</th>' for c in cols)}</tr></thead>"
            f"<tbody>{body}</tbody></table><ul>{''.join(f'<li>{e(n)}</li>' for n in notes)}</ul>")


def autoencoder_tables(summary: dict[str, Any], dataset: str = "audiocaps") -> list[tuple]:
    title, published = PAPER_AUTOENCODER.get(dataset, PAPER_AUTOENCODER["audiocaps"])
    tag = " [UNCALIBRATED]" if summary["uncalibrated"] else ""
    ours = [f"ours ({summary['model_config']}){tag}", f"{summary['sampling_rate_hz'] / 1000:g}kHz",
            summary["stft_distance"], summary["mel_distance"], summary["si_sdr"], f"{summary['latent_rate_hz']:g}Hz",
            f"continuous ({summary['latent_channels']})"]
    rows = [[f"{r[0]} (published)"] + r[1:] for r in published] + [ours]
    notes = [f"Published rows: {title} of the Stable Audio Open paper, as printed.",
             f"Ours: {summary['recordings']} recordings of {summary['data']} ({summary['skipped']} skipped), "
             f"metrics as auraloss computes them with its defaults, mean over recordings.",
             "Checkpoint: " + (f"sha256 {summary['checkpoint_sha256']}" if summary["checkpoint_sha256"]
                               else "none: UNCALIBRATED random weights, the numbers mean nothing")]
    return [(f"{title}, beside ours", AE_COLUMNS, rows, notes, len(published))]


def generation_tables(result: dict[str, Any], dataset: str = "audiocaps") -> list[tuple]:
    title, cols, published = PAPER_GENERATION.get(dataset, PAPER_GENERATION["audiocaps"])
    t, emb = result["tables"], result["scores"]["embedders"]
    m = t["main"]
    tag = " [UNCALIBRATED]" if result.get("uncalibrated") else ""
    ours = [f"ours ({result['model_config']}){tag}", f"2/{result['sample_rate'] / 1000:g}kHz",
            f"{result['trim_seconds']:g} sec", m["fd"], m["kl"], m["clap_score"]]
    notes = [f"Published rows: {title} of the Stable Audio Open paper, as printed.",
             f"Ours: {m['files']} generations, trimmed to {result['trim_seconds']:g} s."]
    notes += [f"{k}: {v}" for k, v in sorted(emb.items())]
    if "fd" in emb:
        notes.append("Our FD uses the embedder named above, not openl3: it is not comparable to FD_openl3.")
    if "kl" in emb:
        notes.append("Our KL uses the tagger named above, not PaSST: compare it across our runs only.")
    rows5 = [[f"{r[0]} (published)", r[1], r[2]] for r in PAPER_TABLE5]
    rows5 += [[f"ours: {r['subset']}", r["clap_score"], r["files"]] for r in t["table5"]]
    return [(f"{title}, beside ours", cols, [[f"{r[0]} (published)"] + r[1:] for r in published] + [ours], notes,
             len(published)),
            ("Table 5, CLAP score by prompt subset, beside ours", ["prompts", "CLAP score ↑", "# files"], rows5,
             ["Subsets as in the paper: connectors (and, followed, while, as, then, with, later, before, after) and "
              "speech words (speech, male, female, woman, man, speaking, speaks)."], len(PAPER_TABLE5))]


def write_report(out_dir: pathlib.Path, heading: str, tables: list[tuple]) -> dict[str, str]:
    from ..fsutil import atomic_write_text
    out_dir.mkdir(parents=True, exist_ok=True)
    md = f"# {heading}\n\n" + "\n".join(_md(t, c, r, n) for t, c, r, n, _ in tables)
    css = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}"
           "tr.published{color:#666}tr.ours{font-weight:bold;background:#eef6ff}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
            f"<style>{css}</style></head><body><h1>{html.escape(heading)}</h1>"
            + "".join(_html(*t) for t in tables) + "</body></html>")
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", page)
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html")}
