"""The demo's data and its judge: held-out pairs never reach training, and the detector reads the
rendered videos right, so a low demo score can only come from the model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from allegro_train.demo.detect import detect, parse_prompt
from allegro_train.demo.videos import (COLOURS, DIRECTIONS, HELD_OUT, SHAPES, VideoSpec, held_out_prompts,
                                       plan_videos, render, training_combinations)


def test_held_out_pairs_are_never_planned_and_each_word_is_still_trained():
    specs = plan_videos(200, 77, 0.25, seed=0)
    pairs = {(s.colour, s.direction) for s in specs}
    assert not pairs & set(HELD_OUT)
    # every colour and every direction appears in training, with three partners each
    assert {c for c, _ in pairs} == set(COLOURS) and {d for _, d in pairs} == set(DIRECTIONS)
    assert len(pairs) == len(COLOURS) * len(DIRECTIONS) - len(HELD_OUT)
    # balanced: the 36 training combinations each get 5 or 6 of the 200 videos
    counts = {combo: 0 for combo in training_combinations()}
    for s in specs:
        counts[(s.colour, s.shape, s.direction)] += 1
    assert set(counts.values()) == {5, 6}
    assert 30 <= sum(len(s.scenes) == 2 for s in specs) <= 70  # about a quarter are cut
    assert len(held_out_prompts()) == len(HELD_OUT) * len(SHAPES)


@pytest.mark.parametrize("colour,shape,direction", list(itertools.product(COLOURS, SHAPES, DIRECTIONS)))
def test_detector_reads_every_rendered_combination(colour, shape, direction):
    frames = render(VideoSpec(colour, shape, direction, (77,), seed=7), size=64)
    window = frames[10:58:3]  # what training takes: 16 frames every 3rd, after the split's trim
    found = detect(window)
    assert (found.colour, found.direction) == (colour, direction)
    assert found.travel > 0.3


def test_detector_says_none_without_motion_or_shape():
    frames = render(VideoSpec("red", "square", "right", (77,), seed=1), size=64)
    still = np.repeat(frames[:1], 16, axis=0)
    assert detect(still).direction is None and detect(still).colour == "red"
    grey = np.full((16, 64, 64, 3), 128, np.uint8)
    assert detect(grey) == detect(grey.copy()) and detect(grey).colour is None


def test_cut_videos_change_background_at_the_cut():
    spec = VideoSpec("blue", "circle", "up", (40, 40), seed=3)
    frames = render(spec, 64).astype(np.float32)
    step = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # mean change between consecutive frames
    assert step.argmax() == 39 and step[39] > 5 * np.median(step)


def test_parse_prompt():
    assert parse_prompt("a yellow triangle moves left") == ("yellow", "left")
    with pytest.raises(ValueError, match="names no demo colour"):
        parse_prompt("a purple cat sleeps")
