"""Repeated-recording detection: grouping on constructed embeddings, the keep rule, exact copies
of real audio, the stage's decisions, the embedding store, the CLAP audio path and the
memorisation page (opened in headless Chromium)."""
import datetime as dt
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from sao.catalog import Catalog, Decision
from sao.dedup import exact_edges, group_components, keep_order, near_duplicate_edges, pick_kept
from sao.dedup.stage import run_dedup
from sao.dedup.store import append_embeddings, load_embeddings

from .conftest import chromium_dom, decode_stored

NOW = dt.datetime(2026, 1, 1)


def unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def constructed(seed=0):
    """40 distinct sounds (pairwise cosine ~0.5-0.8, like similar sounds), plus planted replicas:
    a re-encode (cos ~0.995), a gain change (identical direction), a crop (cos ~0.97)."""
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal(512))
    x = unit(base + 0.9 * unit(rng.standard_normal((40, 512))))
    reencode = unit(x[3] + 0.1 * unit(rng.standard_normal(512)) * 0.7)
    gain = x[7] * 1.0
    crop = unit(x[11] + 0.25 * unit(rng.standard_normal(512)))
    return np.vstack([x, reencode, gain, crop])


def test_near_replicas_are_grouped_and_distinct_sounds_are_not():
    x = constructed()
    sims = x[:40] @ x[:40].T
    assert sims[np.triu_indices(40, 1)].max() < 0.9
    pairs, s, info = near_duplicate_edges(x, 0.95)
    res = group_components(len(x), pairs)
    groups = sorted(sorted(g.tolist()) for g in res.groups)
    assert groups == [[3, 40], [7, 41], [11, 42]]
    pairs_ivf, _, info_ivf = near_duplicate_edges(x, 0.95, exact_below=0, nlist=4, nprobe=4)
    assert info_ivf["index"] == "ivf" and {tuple(p) for p in pairs_ivf.tolist()} == {tuple(p) for p in pairs.tolist()}


def test_ivf_self_join_probing_every_cell_equals_the_exact_search():
    # with every cell probed the join compares every pair, so it must find exactly what the flat
    # search finds, each pair once (i < j) with its exact similarity
    rng = np.random.default_rng(3)
    centers = unit(rng.standard_normal((12, 64)))
    x = unit(centers[rng.integers(0, 12, 1500)] + 0.02 * rng.standard_normal((1500, 64)))
    x[1000:1100] = unit(x[:100] + 0.001 * rng.standard_normal((100, 64)))
    flat, flat_s, info = near_duplicate_edges(x, 0.95)
    ivf, ivf_s, info_ivf = near_duplicate_edges(x, 0.95, exact_below=0, nlist=8, nprobe=8)
    assert info["index"] == "flat" and info_ivf["index"] == "ivf" and len(flat) > 100
    assert set(info_ivf["seconds"]) == {"train", "assign", "search"}
    assert (ivf[:, 0] < ivf[:, 1]).all() and len({tuple(p) for p in ivf.tolist()}) == len(ivf)
    assert {tuple(p) for p in ivf.tolist()} == {tuple(p) for p in flat.tolist()}
    assert np.allclose(ivf_s, np.einsum("ij,ij->i", x[ivf[:, 0]], x[ivf[:, 1]]), atol=1e-5)
    assert (ivf_s >= 0.95).all()


def test_exact_copies_and_chains_merge():
    e = exact_edges(["a", "b", "a", None, "", "b", "a"])
    res = group_components(7, e, np.array([[1, 3]]))
    assert sorted(sorted(g.tolist()) for g in res.groups) == [[0, 2, 6], [1, 3, 5]]


def test_keep_rule():
    base = dict(sample_rate=44100, channels=2, duration=10.0, license_canonical="cc-by-4.0", created_at=NOW)
    a = dict(base, recording_id="freesound:2")
    assert pick_kept([a, dict(base, recording_id="freesound:1", sample_rate=48000)])["recording_id"] == "freesound:1"
    assert pick_kept([a, dict(base, recording_id="freesound:3", channels=1)])["recording_id"] == "freesound:2"
    assert pick_kept([a, dict(base, recording_id="freesound:4", license_canonical="cc0-1.0")])["recording_id"] == "freesound:4"
    assert pick_kept([a, dict(base, recording_id="freesound:5", license_canonical="cc-sampling+-1.0")])["recording_id"] == "freesound:2"
    older = dict(base, recording_id="freesound:9", created_at=NOW - dt.timedelta(days=1))
    assert pick_kept([a, older])["recording_id"] == "freesound:9"
    assert pick_kept([a, dict(base, recording_id="freesound:1")])["recording_id"] == "freesound:1"
    assert keep_order(a) < keep_order(dict(base, recording_id="fma:1", duration=5.0))


def _catalogue(tmp_path, corpus_entries, shas_override=None):
    cat = Catalog(tmp_path / "c.duckdb")
    by = {e["id"]: e for e in corpus_entries}
    store = pathlib.Path(by["ovos-dog"]["path"]).parent
    rows, decs = [], []
    specs = [("freesound", "dog", "ovos-dog", "cc0-1.0"), ("freesound", "dog-copy", "ovos-dog", "cc-by-3.0"),
             ("fma", "2", "fma-vibe-ace", "cc-by-3.0"), ("freesound", "frog", "ovos-frog", "cc0-1.0")]
    for source, sid, eid, lic in specs:
        e = by[eid]
        rows.append(dict(source=source, source_id=sid, title=e["title"], author=e["author"], duration=e["duration"],
                         sample_rate=e["sample_rate"], channels=e["channels"], license_raw=lic, license_canonical=lic,
                         crawl_time=NOW, content_sha256=e["sha256"], md5=e["md5"],
                         audio_path=pathlib.Path(e["path"]).name))
        decs.append(Decision(f"{source}:{sid}", "license_gate", "pass", "ok", config_hash="t"))
    cat.upsert_recordings(rows)
    cat.add_decisions(decs)
    decode_stored(cat, store)                          # dedup reads only decoded audio
    return cat, store


def test_stage_excludes_exact_copies_naming_the_kept_one(tmp_path, corpus_entries):
    cat, _ = _catalogue(tmp_path, corpus_entries)
    with cat:
        out = run_dedup(cat, embeddings_dir=tmp_path / "emb", signature=None, threshold=0.95, config_hash="t")
        assert out["groups"] == 1 and out["repeated_excluded"] == {"freesound": 1}
        d = cat.latest_decision_map("dedup")
        assert d["freesound:dog"]["verdict"] == "pass" and d["freesound:dog"]["reason"].startswith("kept")
        assert d["freesound:dog-copy"]["reason"] == "duplicate-of: freesound:dog (identical audio)"
        assert d["freesound:frog"]["verdict"] == "pass"
        rows = cat.query("SELECT recording_id, kept, link FROM duplicate_groups ORDER BY recording_id")
        assert rows == [{"recording_id": "freesound:dog", "kept": True, "link": "exact"},
                        {"recording_id": "freesound:dog-copy", "kept": False, "link": "exact"}]
        again = run_dedup(cat, embeddings_dir=tmp_path / "emb", signature=None, threshold=0.95, config_hash="t")
        assert again["decisions_written"] == 0


def test_stage_uses_stored_embeddings_for_near_replicas(tmp_path, corpus_entries):
    cat, _ = _catalogue(tmp_path, corpus_entries)
    with cat:
        recs = cat.query("SELECT recording_id, content_sha256 FROM recordings ORDER BY recording_id")
        x = constructed()
        vecs = {r["content_sha256"]: x[i] for i, r in enumerate(recs)}
        frog = next(r for r in recs if r["recording_id"] == "freesound:frog")["content_sha256"]
        vib = next(r for r in recs if r["recording_id"] == "fma:2")["content_sha256"]
        vecs[frog] = unit(vecs[vib] + 0.05 * unit(np.random.default_rng(1).standard_normal(512)))
        append_embeddings(tmp_path / "emb", "sig1", vecs, {}, "test", "f" * 64)
        assert set(load_embeddings(tmp_path / "emb", "sig1")) == set(vecs)
        out = run_dedup(cat, embeddings_dir=tmp_path / "emb", signature="sig1", threshold=0.95, config_hash="t",
                        model_name="CLAP", checkpoint_sha256="f" * 64)
        assert out["groups"] == 2
        d = cat.latest_decision_map("dedup")
        pair = {"fma:2", "freesound:frog"}
        losers = {rid for rid in pair if d[rid]["verdict"] == "reject"}
        assert len(losers) == 1
        (loser,), (winner,) = losers, pair - losers
        assert d[loser]["reason"].startswith(f"duplicate-of: {winner} (cosine") and d[winner]["verdict"] == "pass"
        # uncalibrated embeddings never exclude anything
        out = run_dedup(cat, embeddings_dir=tmp_path / "emb", signature="sig1", threshold=0.95, config_hash="t",
                        model_name="CLAP", uncalibrated=True)
        assert out["near_links"] == 0 and out["near_links_not_applied_uncalibrated"] >= 1


@pytest.fixture(scope="module")
def clap():
    from sao.analysis.clap import load_clap
    return load_clap(None, uncalibrated=True, device="cpu")


def test_clap_audio_path_on_real_audio_variants(clap, corpus_entries, tmp_path):
    """Random weights say nothing about similarity; this pins the audio path: decoding of every
    variant, window counts, L2-normalised 512-d output, and determinism."""
    from sao.analysis.clap import embed_files, file_windows, load_clap
    from sao.audio import load
    e = next(x for x in corpus_entries if x["id"] == "fma-vibe-ace")
    x, sr = load(e["path"])
    sf.write(tmp_path / "orig.flac", x.T, sr)
    sf.write(tmp_path / "reencode.mp3", x.T, sr, format="MP3")
    sf.write(tmp_path / "gain.flac", (x * 0.5).T, sr)
    sf.write(tmp_path / "crop.flac", x[:, sr * 5: sr * 35].T, sr)
    paths = [str(tmp_path / n) for n in ("orig.flac", "reencode.mp3", "gain.flac", "crop.flac")]
    assert len(file_windows(paths[0])) == 4 and len(file_windows(paths[3])) == 3
    short = next(x for x in corpus_entries if x["id"] == "kenney-laser1-wav")
    assert len(file_windows(short["path"])) == 1 and file_windows(short["path"])[0].shape == (480_000,)
    emb = embed_files(clap, paths + [short["path"]], batch_size=4)
    assert len(emb) == 5 and all(v.shape == (512,) and abs(np.linalg.norm(v) - 1) < 1e-4 for v in emb.values())
    again = embed_files(clap, paths[:1])
    assert np.allclose(again[paths[0]], emb[paths[0]], atol=1e-5)
    from sao.analysis.panns import CheckpointError
    with pytest.raises(CheckpointError, match="--uncalibrated"):
        load_clap(None)


def test_clap_reads_only_its_windows_and_gets_the_whole_file_samples(clap, corpus_entries, tmp_path, monkeypatch):
    """file_windows decodes and resamples only the windows (from the resampling ratio's grid, with a
    margin): the samples equal decoding and resampling the whole file, for 22.05/44.1/48 kHz, mono and
    stereo, 1 and 4 windows; a short file is repeat-padded as laion-clap's own file list does it."""
    from sao.analysis.clap import file_windows, file_windows_whole
    e = next(x for x in corpus_entries if x["id"] == "fma-vibe-ace")
    from sao.audio import load
    x, sr = load(e["path"])
    paths = []
    for rate, ch in ((22050, 1), (44100, 2), (48000, 1)):
        y = x[:ch, : sr * 40]
        if rate != sr:
            import soxr
            y = soxr.resample(y.T, sr, rate).T
        sf.write(tmp_path / f"{rate}-{ch}.flac", y.T, rate)
        paths.append(str(tmp_path / f"{rate}-{ch}.flac"))
    for p in paths:
        for mw in (1, 4):
            a, b = file_windows(p, mw), file_windows_whole(p, mw)
            assert len(a) == len(b) == mw and all(w.shape == (480_000,) for w in a)
            assert max(float(np.abs(u - v).max()) for u, v in zip(a, b)) < 1e-5, (p, mw)
    # lengths whose resampled end rounds short of ceil(frames * ratio), odd rates: still the window-only
    # path (never a silent whole-file decode) and the same samples
    import sao.analysis.clap as clap_mod
    rng = np.random.default_rng(0)
    whole: list = []

    def counted(*a, **k):
        whole.append(a)
        return file_windows_whole(*a, **k)
    for rate, frames in ((44100, 44100 * 31 + 1), (22050, 22050 * 31 + 7), (96000, 96000 * 11 + 1), (8000, 8000 * 20)):
        path = tmp_path / f"odd-{rate}.flac"
        sf.write(path, (rng.standard_normal(frames) * 0.1).astype(np.float32), rate)
        with monkeypatch.context() as m:
            m.setattr(clap_mod, "file_windows_whole", counted)
            a = file_windows(str(path), 4)
        b = file_windows_whole(str(path), 4)
        assert not whole and len(a) == len(b) and max(float(np.abs(u - v).max()) for u, v in zip(a, b)) < 1e-5, rate
    # a truncated long file (WAV, and a FLAC whose header still announces the full length): refused, even
    # when only its first window is read, never padded silence
    from sao.audio import AudioDecodeError
    for name in ("cut.wav", "cut.flac"):
        cut = tmp_path / name
        sf.write(cut, x[0, : sr * 40], sr)
        with open(cut, "r+b") as f:
            f.truncate(cut.stat().st_size // 2)
        for mw in (1, 4):
            with pytest.raises(AudioDecodeError, match="truncated|decode"):
                file_windows(str(cut), mw)
    # a short file: laion-clap's file list (librosa decoding, repeat-pad) gives the same embedding
    short = next(x for x in corpus_entries if x["id"] == "kenney-laser1-wav")
    ours = clap.module.get_audio_embedding_from_data(x=np.stack(file_windows(short["path"], 1)))[0]
    theirs = clap.module.get_audio_embedding_from_filelist(x=[short["path"]])[0]
    assert float(np.abs(ours - theirs).max()) < 1e-4


def test_clap_checkpoint_audio_weights_round_trip(clap, tmp_path):
    import torch

    from sao.analysis.clap import load_clap
    state = {f"module.{k}": v for k, v in clap.module.model.state_dict().items()
             if k.startswith(("audio_branch.", "audio_projection."))}
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "clap.pt")
    cm = load_clap(tmp_path / "clap.pt", device="cpu")
    assert cm.checkpoint_sha256 and not cm.uncalibrated and cm.signature != clap.signature
    torch.save({"state_dict": {"text_branch.x": torch.zeros(1)}}, tmp_path / "bad.pt")
    from sao.analysis.panns import CheckpointError
    with pytest.raises(CheckpointError, match="no audio_branch"):
        load_clap(tmp_path / "bad.pt", device="cpu")


def test_memorization_page_plays_in_headless_chromium(clap, corpus_entries, tmp_path):
    from sao.analysis.clap import embed_files
    from sao.dedup.memorization import memorization_report
    train_entries = [e for e in corpus_entries if e["id"] in ("ovos-dog", "ovos-frog", "fma-vibe-ace", "opensfx-sheep")]
    emb = embed_files(clap, [e["path"] for e in train_entries])
    train = {e["sha256"]: emb[e["path"]] for e in train_entries}
    recs = {e["sha256"]: {"recording_id": f"freesound:{e['id']}", "path": e["path"],
                          "attribution": {"title": e["title"], "author": e["author"], "license": e["license"],
                                          "source_url": e["source_url"]}} for e in train_entries}
    gen = tmp_path / "generated"
    gen.mkdir()
    for e in corpus_entries[:3]:
        shutil.copyfile(e["path"], gen / pathlib.Path(e["path"]).name)
    out = memorization_report(gen, clap, train, recs, tmp_path / "report", top=2, k=2)
    assert out["candidates"] == 2 and out["uncalibrated"]
    page = pathlib.Path(out["page"])
    text = page.read_text()
    assert text.count("<audio") == 2 * (1 + 2) and "UNCALIBRATED" in text and "Joseph SARDIN" in text
    for src in __import__("re").findall(r"src='([^']+)'", text):
        assert (page.parent / src).is_file()
    dom = chromium_dom(page.as_uri(), tmp_path / "chrome")
    assert dom.count("<audio") == 6 and "Memorisation candidates" in dom
    shot = tmp_path / "page.png"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")    # there: chromium_dom skips otherwise
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome2'}",
                    f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
