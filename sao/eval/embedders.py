"""Pluggable models behind the generation metrics. Each names itself (model, checkpoint checksum,
or "UNCALIBRATED: random weights"), and that name is printed in every table it fed.

- ``ClapAudio``: LAION-CLAP audio embeddings at 48 kHz (10 s windows, averaged): the FD embedder.
  The paper's FD uses openl3, which has no PyTorch build here; an FD over CLAP embeddings is a
  different number and the tables say so.
- ``PannsTagger``: PANNs Cnn14_DecisionLevelMax AudioSet logits at 32 kHz, mean over 10 s windows
  hopped by 5 s (windows under 15 % of 10 s dropped), as stable-audio-metrics does with PaSST: the KL tagger.
- ``ClapText``: LAION-CLAP text embeddings for the CLAP score. With a checkpoint, its roberta text
  tower is loaded (the roberta-base tokenizer must be in the local Hugging Face cache); without one,
  the bundled random "transformer" tower runs and every score says it is uncalibrated.
Every audio input is peak-normalised to -1 dBFS first, as stable-audio-metrics does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np
import torch



def peak_normalise(x: np.ndarray, db: float = -1.0) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (10 ** (db / 20) / peak)).astype(np.float32) if peak > 0 else x.astype(np.float32)


def to_mono(audio: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    a = a.mean(0) if a.ndim == 2 else a
    if sr != target_sr and a.size:
        import soxr
        a = soxr.resample(a, sr, target_sr, quality="HQ").astype(np.float32)
    return peak_normalise(a)


def windows(x: np.ndarray, size: int, hop: int, min_fraction: float = 0.15) -> list[np.ndarray]:
    """Analysis windows of ``size`` hopped by ``hop``; a short last window is zero-padded, or
    dropped when it holds under ``min_fraction`` of a window (mostly silence otherwise)."""
    out = []
    for start in range(0, max(hop, x.size - hop), hop):
        w = x[start:start + size]
        if w.size < size:
            if w.size <= size * min_fraction and out:
                continue
            w = np.pad(w, (0, size - w.size))
        out.append(w)
    return out or [np.zeros(size, np.float32)]


def weights_tag(checkpoint_sha256: str | None) -> str:
    return f"checkpoint sha256 {checkpoint_sha256[:12]}" if checkpoint_sha256 else "UNCALIBRATED: random weights"


@dataclasses.dataclass
class ClapAudio:
    cm: Any                                   # sao.analysis.clap.ClapModel
    batch_size: int = 8
    sample_rate: int = 48_000

    @property
    def name(self) -> str:
        return f"LAION-CLAP {self.cm.amodel} audio ({weights_tag(self.cm.checkpoint_sha256)})"

    def embed(self, clips: Iterable[tuple[np.ndarray, int]]) -> np.ndarray:
        out = []
        for audio, sr in clips:
            wins = windows(to_mono(audio, sr, self.sample_rate), 10 * self.sample_rate, 10 * self.sample_rate)
            with torch.inference_mode():
                e = self.cm.module.get_audio_embedding_from_data(x=np.stack(wins), use_tensor=False)
            v = np.asarray(e, np.float64).mean(0)
            out.append(v / max(np.linalg.norm(v), 1e-12))
        return np.stack(out)


@dataclasses.dataclass
class PannsTagger:
    lm: Any                                   # sao.analysis.panns.LoadedModel
    sample_rate: int = 32_000

    @property
    def name(self) -> str:
        return f"PANNs Cnn14_DecisionLevelMax logits ({weights_tag(self.lm.checkpoint_sha256)})"

    def logits(self, clips: Iterable[tuple[np.ndarray, int]]) -> np.ndarray:
        out = []
        for audio, sr in clips:
            wins = windows(to_mono(audio, sr, self.sample_rate), 10 * self.sample_rate, 5 * self.sample_rate)
            with torch.inference_mode():
                p = self.lm.model(torch.from_numpy(np.stack(wins)).to(self.lm.device))["clipwise_output"]
            p = p.double().clamp(1e-7, 1 - 1e-7).cpu()
            out.append(torch.log(p / (1 - p)).mean(0).numpy())     # the sigmoid's logits, mean over windows
        return np.stack(out)


@dataclasses.dataclass
class ClapText:
    cm: Any
    roberta: bool = False                     # the checkpoint's roberta text tower is loaded

    @property
    def name(self) -> str:
        if self.roberta and self.cm.checkpoint_sha256:
            return f"LAION-CLAP {self.cm.amodel} (checkpoint sha256 {self.cm.checkpoint_sha256[:12]})"
        return f"LAION-CLAP {self.cm.amodel} (UNCALIBRATED: random audio and text towers)"

    def embed(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            if self.roberta:
                e = self.cm.module.get_text_embedding(texts, use_tensor=True)
            else:
                from clap_module import tokenize
                m = self.cm.module.model
                e = torch.nn.functional.normalize(m.encode_text(tokenize(texts), device=self.cm.device), dim=-1)
        return e.float().cpu().numpy()


def load_clap_scorer(checkpoint: str | None, *, amodel: str = "HTSAT-tiny", uncalibrated: bool = False,
                     device: str | None = None) -> tuple[ClapAudio, ClapText]:
    """CLAP audio and text embedders for the CLAP score, from one checkpoint (audio and text towers)."""
    from ..analysis.clap import ClapModel, import_laion_clap, load_clap
    from ..models.checkpoint import CheckpointError, load_weights, read_state_dict, sha256_file, strip_prefix
    if not checkpoint:
        cm = load_clap(None, amodel=amodel, uncalibrated=uncalibrated, device=device)
        return ClapAudio(cm), ClapText(cm, roberta=False)
    laion_clap = import_laion_clap()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module = laion_clap.CLAP_Module(enable_fusion=False, amodel=amodel, tmodel="roberta", device=str(dev))
    if len(module.tokenize) < 50_000:
        raise CheckpointError("the CLAP score's roberta text tower needs the roberta-base tokenizer in the local "
                              "Hugging Face cache (HF_HOME); it was not found offline")
    state = strip_prefix(read_state_dict(checkpoint, unwrap=("model", "state_dict")), "module.")
    state.pop("text_branch.embeddings.position_ids", None)
    load_weights(module.model, state, source=checkpoint, what=f"CLAP {amodel}/roberta", strict=False,
                 required=lambda k: not k.endswith("position_ids"))
    module.model.eval()
    cm = ClapModel(module, dev, sha256_file(checkpoint), amodel)
    return ClapAudio(cm), ClapText(cm, roberta=True)
