"""The real Cnn14_DecisionLevelMax architecture (random weights) end to end on corpus audio."""
import pickle

import numpy as np
import pytest

from .conftest import decode_stored
import soundfile as sf
import torch

from sao.analysis.music_rule import MusicRule, default_music_classes
from sao.analysis.music_screen import ScreenConfig, run_music_screen, screen_audio, stream_windows
from sao.analysis.panns import MODEL_NAME, CheckpointError, load_model, sha256_file
from sao.catalog import Catalog, Decision


@pytest.fixture(scope="module")
def random_model():
    return load_model(None, uncalibrated=True, device="cpu")


def test_refuses_to_run_without_a_checkpoint():
    with pytest.raises(CheckpointError, match="--uncalibrated"):
        load_model(None)


def test_checkpoint_round_trip_records_sha256(random_model, tmp_path):
    path = tmp_path / "cnn14_dlm.pth"
    torch.save({"model": random_model.model.state_dict(), "iteration": 0}, path)
    lm = load_model(path, device="cpu")
    assert lm.checkpoint_sha256 == sha256_file(path) and not lm.uncalibrated
    for k, v in random_model.model.state_dict().items():
        assert torch.equal(v, lm.model.state_dict()[k])
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in random_model.model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert load_model(tmp_path / "m.safetensors", device="cpu").checkpoint_sha256


def test_checkpoints_that_run_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(path)
    (tmp_path / "wrong.pth").write_bytes(b"")
    torch.save({"model": {"nope": torch.zeros(1)}}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path / "wrong.pth")


def test_stream_windows_reads_long_files_in_fixed_windows(tmp_path):
    sr, seconds = 44100, 95.3
    x = (np.random.default_rng(0).standard_normal((int(sr * seconds), 2)) * 0.05).astype(np.float32)
    sf.write(tmp_path / "long.flac", x, sr)
    wins = list(stream_windows(str(tmp_path / "long.flac"), 320_000))
    assert all(w.shape == (320_000,) for w, _ in wins)
    assert len(wins) == 10 and sum(v for _, v in wins) == pytest.approx(seconds * 32000, abs=64)
    assert np.all(wins[-1][0][wins[-1][1]:] == 0)


def test_screen_end_to_end_on_real_audio(random_model, corpus_entries):
    by_id = {e["id"]: e for e in corpus_entries}
    picks = ["fma-vibe-ace", "lomiri-time-not-lost", "pyannote-sample", "minetest-water-1", "kenney-laser1-wav"]
    items = [dict(recording_id=i, path=by_id[i]["path"], duration=by_id[i]["duration"]) for i in picks]
    cfg = ScreenConfig(classes=tuple(default_music_classes()), batch_size=4, early_stop=False)
    res, stats = screen_audio(items, random_model, cfg)
    assert res["minetest-water-1"]["kind"] == "short" and res["kenney-laser1-wav"]["kind"] == "short"
    vibe = res["fma-vibe-ace"]
    assert vibe["kind"] == "screened" and vibe["verdict"].total_seconds == pytest.approx(61.46, abs=0.1)
    assert len(vibe["top_music_classes"]) == 3
    assert stats["model_seconds"] == pytest.approx(61.46 + 37.14 + 30.0, abs=0.2)
    # early stopping reads less and decides the same
    res2, stats2 = screen_audio(items, random_model, ScreenConfig(classes=cfg.classes, batch_size=4))
    assert stats2["model_seconds"] <= stats["model_seconds"]
    for rid in ("fma-vibe-ace", "lomiri-time-not-lost", "pyannote-sample"):
        assert res2[rid]["verdict"].is_music == res[rid]["verdict"].is_music


def test_stage_writes_uncalibrated_decisions_and_is_idempotent(random_model, corpus_entries, tmp_path):
    import datetime as dt
    import pathlib
    by_id = {e["id"]: e for e in corpus_entries}
    with Catalog(tmp_path / "c.duckdb") as cat:
        recs, decs = [], []
        for i in ("lomiri-time-not-lost", "minetest-water-1", "ovos-dog"):
            e = by_id[i]
            recs.append(dict(source="freesound", source_id=i, title=e["title"], duration=e["duration"],
                             license_raw=e["license_url"], crawl_time=dt.datetime(2026, 1, 1),
                             audio_path=pathlib.Path(e["path"]).name))
            decs.append(Decision(f"freesound:{i}", "license_gate", "pass", "ok", config_hash="t"))
        cat.upsert_recordings(recs)
        cat.add_decisions(decs)
        store = pathlib.Path(corpus_entries[0]["path"]).parent
        decode_stored(cat, store)                      # the screen reads only what the decode stage passed
        cfg = ScreenConfig(classes=tuple(default_music_classes()), rule=MusicRule(min_seconds=30))
        out = run_music_screen(cat, random_model, cfg, audio_store=store, config_hash="t")
        assert out["screened"] == 3 and out["too_short"] == 2 and out["uncalibrated"]
        d = cat.latest_decision_map("music_screen")
        assert all("UNCALIBRATED" in x["reason"] for x in d.values())
        row = cat.query("SELECT model_name, checkpoint_sha256, threshold, uncalibrated FROM decisions "
                        "WHERE stage = 'music_screen' LIMIT 1")[0]
        assert row == {"model_name": MODEL_NAME, "checkpoint_sha256": None, "threshold": 0.15, "uncalibrated": True}
        assert d["freesound:lomiri-time-not-lost"]["details"]["rule"]["contiguous"] is False
        again = run_music_screen(cat, random_model, cfg, audio_store=store, config_hash="t")
        assert again["screened"] == 0
        # a different rule is a different signature: screened again
        other = ScreenConfig(classes=cfg.classes, rule=MusicRule(min_seconds=30, contiguous=True))
        assert run_music_screen(cat, random_model, other, audio_store=store, config_hash="t")["screened"] == 3
