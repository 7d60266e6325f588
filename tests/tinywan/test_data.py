"""The procedural data: deterministic per seed, captions true on the pixels, and the
pixel checker scoring ground truth as correct."""

import numpy as np
import pytest

from tinywan import checker, data


def test_same_seed_same_video_and_caption():
    a, ca, _ = data.make_video(123)
    b, cb, _ = data.make_video(123)
    c, _, _ = data.make_video(124)
    assert ca == cb and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1


def test_generator_covers_every_attribute():
    scenes = [data.make_video(s)[2] for s in range(300)]
    objects = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objects} == set(data.SHAPES)
    assert {o.color for o in objects} == set(data.COLORS)
    assert {o.motion for o in objects} == set(data.MOTIONS)
    assert {o.size for o in objects} == set(data.SIZES)
    assert {s.background for s in scenes} == set(data.BACKGROUNDS)
    assert any(len(s.objects) == 2 for s in scenes)


def test_caption_words_are_in_the_vocabulary():
    vocab = set(data.vocabulary())
    for s in range(50):
        assert set(data.make_video(s)[1].split()) <= vocab


@pytest.mark.parametrize("seed", range(12))
def test_caption_matches_pixels(seed):
    """Checked directly on pixels: the object's colour at its mask, its centroid moving
    the stated way, a falling-then-rising path for a bounce, a grey background."""
    video, caption, scene = data.make_video(seed, two_objects=False)
    obj = scene.objects[0]
    colour = np.asarray(data.COLORS[obj.color])
    at_colour = np.abs(video - colour).max(-1) < 0.02  # fully covered pixels
    assert all(m.sum() > 20 for m in at_colour), caption
    cx = np.array([np.nonzero(m)[1].mean() for m in at_colour])
    cy = np.array([np.nonzero(m)[0].mean() for m in at_colour])
    dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
    if obj.motion == "moves right":
        assert dx > 5 and abs(dy) < 1
    elif obj.motion == "moves left":
        assert dx < -5 and abs(dy) < 1
    elif obj.motion == "moves down":
        assert dy > 5 and abs(dx) < 1
    elif obj.motion == "moves up":
        assert dy < -5 and abs(dx) < 1
    else:
        turn = cy.argmax()
        assert 0 < turn < 15 and np.all(np.diff(cy[:turn + 1]) > 0) and np.all(np.diff(cy[turn:]) <= 0.01)
    # Everything away from the object is grey; a plain background is one grey level.
    yy, xx = np.mgrid[0:32, 0:32]
    half = data.SIZES[obj.size]
    away = np.stack([np.maximum(np.abs(xx + 0.5 - x), np.abs(yy + 0.5 - y)) > half + 1.5
                     for x, y in obj.track])
    grey = video[away]
    assert np.abs(grey.max(-1) - grey.min(-1)).max() < 1e-6
    if scene.background == "plain":
        assert np.ptp(grey) < 1e-6
    else:
        assert np.ptp(grey) > 0.15


def test_two_objects_keep_their_colours_and_directions():
    video, caption, scene = data.make_video(5, two_objects=True)
    assert " and " in caption
    for obj in scene.objects:
        m = np.abs(video - np.asarray(data.COLORS[obj.color])).max(-1) < 0.02
        xs = [np.nonzero(f)[1].mean() for f in m]
        assert (xs[-1] - xs[0] > 5) == (obj.motion == "moves right"), caption


def test_checker_scores_ground_truth_perfectly():
    results, chances = [], []
    for s in range(120):
        video, _, scene = data.make_video(50_000 + s)
        results.append(checker.check(video, scene))
        chances.append(checker.chance(scene))
    summary = checker.summarize(results, chances)
    for attribute, row in summary.items():
        assert row["accuracy"] >= 0.98, (attribute, row)
        assert row["chance"] < 0.6


def test_checker_rejects_wrong_prompts():
    """Scored against a different scene's caption, accuracy falls towards chance."""
    results = []
    for s in range(60):
        video, _, _ = data.make_video(60_000 + s, two_objects=False)
        _, _, other = data.make_video(70_000 + s, two_objects=False)
        results.append(checker.check(video, other))
    summary = checker.summarize(results)
    for attribute in ("colour", "shape", "motion", "background"):
        assert summary[attribute]["accuracy"] < 0.6, (attribute, summary[attribute])
