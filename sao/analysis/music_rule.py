"""The music rule of paper section 3, as a pure function over frame probabilities.

A recording is music when music-related AudioSet classes are active (probability >= the
threshold, 0.15 in the paper) for at least 30 seconds. Whether those 30 s must be one
contiguous run is not stated in the paper; it is configuration here (default: cumulative),
and every decision records which reading was used.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

PANNS_FPS = 100.0          # Cnn14_DecisionLevelMax framewise output: hop 320 at 32 kHz


@dataclass(frozen=True)
class MusicRule:
    threshold: float = 0.15
    min_seconds: float = 30.0
    contiguous: bool = False
    fps: float = PANNS_FPS

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MusicVerdict:
    is_music: bool
    music_seconds: float          # frames at or above the threshold, in seconds
    longest_run_seconds: float    # the longest contiguous run
    total_seconds: float


def _data(name: str) -> str:
    return str(resources.files("sao.data") / "audioset" / name)


def audioset_labels() -> list[str]:
    with open(_data("class_labels_indices.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def default_music_classes() -> list[int]:
    """The Music branch of the AudioSet ontology intersected with the 527 PANNs classes (150)."""
    with open(_data("music_classes.json")) as f:
        return sorted(int(row[0]) for row in json.load(f))


def music_activity(frame_probs: np.ndarray, class_indices: list[int]) -> np.ndarray:
    """[frames, 527] -> [frames]: the highest music-class probability of each frame."""
    return frame_probs[:, class_indices].max(axis=1)


def longest_run(active: np.ndarray) -> int:
    if not active.any():
        return 0
    padded = np.concatenate([[False], active, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return int((edges[1::2] - edges[::2]).max())


def music_rule(activity: np.ndarray, rule: MusicRule = MusicRule()) -> MusicVerdict:
    """``activity``: per-frame music probability at ``rule.fps`` frames per second."""
    active = np.asarray(activity) >= rule.threshold
    total = float(active.sum()) / rule.fps
    run = longest_run(active) / rule.fps
    measured = run if rule.contiguous else total
    # a small tolerance absorbs float rounding of frame counts (3000 frames == 30.0 s)
    return MusicVerdict(measured + 1e-9 >= rule.min_seconds, round(total, 3), round(run, 3),
                        round(len(active) / rule.fps, 3))
