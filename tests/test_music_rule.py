"""The music rule of paper section 3, pinned on synthetic frame probabilities (100 fps)."""
import numpy as np
import pytest

from sao.analysis.music_rule import MusicRule, default_music_classes, music_activity, music_rule

FPS = 100


def frames(*segments, total=6000, level=0.5):
    a = np.zeros(total, np.float32)
    for start, dur in segments:
        a[int(start * FPS): int((start + dur) * FPS)] = level
    return a


def test_exactly_30_seconds_is_music():
    assert music_rule(frames((0, 30))).is_music


def test_29_9_seconds_is_not():
    v = music_rule(frames((0, 29.9)))
    assert not v.is_music and v.music_seconds == pytest.approx(29.9)


def test_split_segments_count_when_cumulative_but_not_when_contiguous():
    a = frames((0, 20), (40, 15))
    assert music_rule(a).is_music and music_rule(a).music_seconds == pytest.approx(35)
    v = music_rule(a, MusicRule(contiguous=True))
    assert not v.is_music and v.longest_run_seconds == pytest.approx(20)
    assert music_rule(frames((0, 20), (40, 31), total=8000), MusicRule(contiguous=True)).is_music


@pytest.mark.parametrize("level,expected", [(0.15, True), (0.1499, False), (0.9, True), (0.0, False)])
def test_threshold_edges(level, expected):
    assert music_rule(frames((0, 40), level=level)).is_music is expected


def test_rule_parameters_are_configuration():
    a = frames((0, 12), level=0.3)
    assert not music_rule(a).is_music
    assert music_rule(a, MusicRule(min_seconds=10)).is_music
    assert not music_rule(a, MusicRule(min_seconds=10, threshold=0.5)).is_music
    assert music_rule(np.full(300, 0.2), MusicRule(min_seconds=30, fps=10)).is_music   # 300 frames at 10 fps


def test_activity_is_the_max_over_music_classes():
    probs = np.zeros((4, 527), np.float32)
    probs[0, 0] = 0.9            # Speech: not a music class
    probs[1, 137] = 0.2          # Music
    probs[2, 206] = 0.3          # Wind chime (Music branch)
    classes = default_music_classes()
    assert len(classes) == 150 and 0 not in classes and {137, 206, 28} <= set(classes)
    assert music_activity(probs, classes).tolist() == pytest.approx([0.0, 0.2, 0.3, 0.0])
