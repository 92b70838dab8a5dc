"""Evaluation: the paper's metrics agree with auraloss and the reference formulas, the table 5
prompt filters are pinned, and both evaluation commands run end to end on random weights (and say so)."""
import csv
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from sao.eval import metrics
from tests.conftest import REPO


def _pair(seed: int, n: int = 44_100, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44_100
    ref = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t + 1)]).astype(np.float32)
    ref += 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    est = (0.8 * ref + noise * rng.standard_normal(ref.shape)).astype(np.float32)
    return est, ref


@pytest.mark.parametrize("seed,noise", [(0, 0.3), (1, 0.01), (2, 1.5)])
def test_autoencoder_metrics_agree_with_auraloss(seed, noise):
    auraloss = pytest.importorskip("auraloss")
    est, ref = _pair(seed, noise=noise)
    x, y = torch.from_numpy(est)[None], torch.from_numpy(ref)[None]      # auraloss: (batch, channels, samples)
    want_stft = float(auraloss.freq.MultiResolutionSTFTLoss()(x, y))
    want_mel = float(auraloss.freq.MelSTFTLoss(sample_rate=44_100)(x, y))
    want_sisdr = -float(auraloss.time.SISDRLoss()(x, y))
    assert metrics.stft_distance(est, ref) == pytest.approx(want_stft, rel=1e-4)
    assert metrics.mel_distance(est, ref, 44_100) == pytest.approx(want_mel, rel=1e-4)
    assert metrics.si_sdr(est, ref) == pytest.approx(want_sisdr, rel=1e-4, abs=1e-4)
    # mono input is one channel of the same computation
    assert metrics.si_sdr(est[0], ref[0]) == pytest.approx(-float(auraloss.time.SISDRLoss()(x[:, :1], y[:, :1])), rel=1e-4)


def test_metric_directions_and_bad_shapes():
    est, ref = _pair(3, noise=0.01)
    worse, _ = _pair(3, noise=1.0)
    assert metrics.si_sdr(est, ref) > metrics.si_sdr(worse, ref)
    assert metrics.stft_distance(est, ref) < metrics.stft_distance(worse, ref)
    assert metrics.mel_distance(est, ref) < metrics.mel_distance(worse, ref)
    assert metrics.stft_distance(ref, ref) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.si_sdr(est[:, :-1], ref)
    with pytest.raises(ValueError, match="too short"):
        metrics.stft_distance(est[:, :1000], ref[:, :1000])


def test_frechet_distance_is_zero_on_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 16))
    assert abs(metrics.fd(a, a)) < 1e-6
    shifts = [metrics.fd(a, a + s) for s in (0.1, 0.5, 1.0, 2.0)]
    assert shifts == sorted(shifts) and shifts[0] > 0
    assert shifts[2] == pytest.approx(16 * 1.0 ** 2, rel=1e-6)        # a pure shift adds |delta|^2
    with pytest.raises(ValueError, match="at least 2"):
        metrics.fd(a[:1], a)


def test_kl_matches_the_reference_formula():
    rng = np.random.default_rng(1)
    gen, ref = rng.standard_normal((5, 527)) * 3, rng.standard_normal((5, 527)) * 3
    ours = metrics.kl_generated_vs_reference(gen, ref)
    p_gen, p_ref = torch.softmax(torch.tensor(gen), -1), torch.softmax(torch.tensor(ref), -1)
    for i in range(5):       # stable-audio-metrics: F.kl_div((ref_p + 1e-6).log(), eval_p, reduction='sum')
        want = torch.nn.functional.kl_div((p_ref[i] + 1e-6).log(), p_gen[i], reduction="sum")
        assert ours[i] == pytest.approx(float(want), rel=1e-6)
    same = metrics.kl_generated_vs_reference(gen, gen)
    assert np.all(np.abs(same) < 1e-3) and np.all(ours > 0.1)          # 0 up to the reference's 1e-6 offset


def test_table5_prompt_filters_are_pinned():
    p = ["A man speaking as a crowd of people laugh and applaud", "Water flowing in a stream",
         "Birds chirping while the wind blows", "A woman speaks", "A manual typewriter and a band",
         "SPEECH from a radio", "Rain followed by thunder", "A dog barks then growls"]
    assert [metrics.has_speech(x) for x in p] == [True, False, False, True, False, True, False, False]
    assert [metrics.has_connector(x) for x in p] == [True, False, True, False, True, False, True, True]
    s = metrics.table5_subsets(p)
    assert s == {"all": list(range(8)), "no speech prompts": [1, 2, 4, 6, 7],
                 "no connectors prompts": [1, 3, 5], "no speech & connectors": [1]}
    assert set(metrics.CONNECTOR_WORDS) == {"and", "followed", "while", "as", "then", "with", "later", "before", "after"}
    assert set(metrics.SPEECH_WORDS) == {"speech", "male", "female", "woman", "man", "speaking", "speaks"}


def test_clap_score_runs_with_random_weights_and_says_so():
    from sao.eval.embedders import load_clap_scorer
    audio, text = load_clap_scorer(None, uncalibrated=True)
    assert "UNCALIBRATED" in text.name and "UNCALIBRATED" in audio.name
    est, _ = _pair(4)
    a = audio.embed([(est, 44_100), (est[:, :20_000], 44_100)])
    t = text.embed(["a sine tone", "rain on a tin roof"])
    assert a.shape == (2, 512) and t.shape == (2, 512)
    s = metrics.cosine(a, t)
    assert np.all(np.abs(s) <= 1 + 1e-6) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    from sao.analysis.panns import CheckpointError
    with pytest.raises(CheckpointError):
        load_clap_scorer(None, uncalibrated=False)


def _sample_files(tmp_path, n=3):
    meta = json.loads((REPO / "datasets" / "sample" / "metadata.json").read_text())
    files = [e for e in meta if e["duration"] < 40][:n]
    out = tmp_path / "refs"
    out.mkdir()
    for e in files:
        shutil.copy(REPO / "datasets" / "sample" / e["file"], out / pathlib.Path(e["file"]).name)
    return files, out


def test_autoencoder_eval_end_to_end(tmp_path, capsys):
    import soundfile as sf
    from safetensors.torch import save_file

    from sao import cli
    from sao.eval import autoencoder
    files, data = _sample_files(tmp_path)
    sf.write(str(data / "six.wav"), np.zeros((44_100, 6), np.float32), 44_100)            # skipped: 6 channels
    sf.write(str(data / "tiny.wav"), np.zeros((441, 1), np.float32), 44_100)              # skipped: too short
    (data / "bad.flac").write_bytes(b"not audio")                                         # skipped: corrupt
    ae, sha = autoencoder.load_autoencoder(None, "tiny", uncalibrated=True)
    assert sha is None
    ckpt = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(ckpt))
    out = autoencoder.run(str(ckpt), str(data), chunk_seconds=5.0)
    s = out["summary"]
    assert s["recordings"] == len(files) and s["skipped"] == 3 and not s["uncalibrated"]
    assert (s["latent_rate_hz"], s["latent_channels"], s["sampling_rate_hz"]) == (round(44_100 / 2048, 2), 64, 44_100)
    skipped = {r["item"]: r["skipped"] for r in out["items"] if "skipped" in r}
    assert "6 channels" in skipped["six.wav"] and "too short" in skipped["tiny.wav"] and "bad.flac" in skipped["bad.flac"]
    scored = [r for r in out["items"] if "skipped" not in r]
    assert all(np.isfinite([r["stft_distance"], r["mel_distance"], r["si_sdr"]]).all() for r in scored)
    assert s["si_sdr"] == pytest.approx(np.mean([r["si_sdr"] for r in scored]))
    with pytest.raises(autoencoder.EvalError, match="does not fit"):
        autoencoder.load_autoencoder(ckpt, "stable_audio_open_1_0")
    with pytest.raises(autoencoder.EvalError, match="--uncalibrated"):
        autoencoder.load_autoencoder(None, "tiny")
    assert cli.main(["eval", "autoencoder", "--data", str(data), "--uncalibrated", "--out", str(tmp_path / "r"),
                     "--limit", "2"]) == 0
    assert "[UNCALIBRATED]" in capsys.readouterr().out
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Stable Audio Open (published) | 44.1kHz | 1.25 | 0.86 | -0.93" in md and "ours (tiny) [UNCALIBRATED]" in md
    summ = json.loads((tmp_path / "r" / "results.json").read_text())["summary"]
    assert summ["recordings"] + summ["skipped"] == 2 and summ["uncalibrated"]


def test_generation_eval_end_to_end_with_per_prompt_results(tmp_path, capsys):
    from sao import cli
    from sao.eval.generation import PromptsError, read_prompts
    from sao.models.t5_local import build_tiny_t5
    files, refs = _sample_files(tmp_path)
    prompts = tmp_path / "prompts.csv"
    with open(prompts, "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "caption", "audio"])
        w.writeheader()
        for i, e in enumerate(files):
            w.writerow({"id": f"p{i}", "caption": e["title"] + (" while a man speaks" if i == 0 else ""),
                        "audio": f"refs/{pathlib.Path(e['file']).name}"})
    t5 = build_tiny_t5(tmp_path / "t5", ["water rain wind dog bird music man speaks"] * 50)
    out = tmp_path / "gen"
    assert cli.main(["eval", "generate", "--prompts", str(prompts), "--uncalibrated", "--t5-path", str(t5),
                     "--steps", "2", "--seconds", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[UNCALIBRATED]" in printed and "UNCALIBRATED: random" in printed
    per = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
    assert [p["id"] for p in per] == ["p0", "p1", "p2"] and per[0]["speech"] and per[0]["connector"]
    assert all({"clap_score", "kl"} <= p.keys() for p in per)
    import soundfile as sf
    res = json.loads((out / "results.json").read_text())
    clip = min(3.0, 65_536 / 44_100)                      # the tiny model's window is 1.49 s: clips say so
    assert res["trim_seconds"] == pytest.approx(clip)
    assert all(sf.info(str(out / "generated" / f"p{i}.wav")).duration == pytest.approx(clip, abs=0.01) for i in range(3))
    assert res["tables"]["main"]["files"] == 3 and res["tables"]["main"]["fd"] is not None
    t5rows = {r["subset"]: r["files"] for r in res["tables"]["table5"]}
    want = {k: len(v) for k, v in metrics.table5_subsets([p["caption"] for p in per]).items()}
    assert t5rows == want and want["all"] == 3 and want["no speech prompts"] == 2
    html = (out / "report.html").read_text()
    assert "Stable Audio Open (published)" in html and "not openl3" in html and "class='ours'" in html
    # bad prompt files name the item and the reason
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "caption": "x"}\n{"id": "a", "caption": "y"}\n')
    with pytest.raises(PromptsError, match="unique"):
        read_prompts(bad)
    bad.write_text('{"id": "b", "caption": "x", "audio": "../../etc/passwd"}\n')
    with pytest.raises(ValueError, match="escapes"):
        read_prompts(bad)
    bad.write_text('{"id": "c"}\n')
    with pytest.raises(PromptsError, match="no caption"):
        read_prompts(bad)
