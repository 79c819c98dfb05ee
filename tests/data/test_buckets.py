"""Bucket choice, token-budget batch sizes and the image/video mix: pure bookkeeping, no files."""

from __future__ import annotations

import pytest

from allegro_train.data.batching import BucketBatcher
from allegro_train.data.buckets import BucketTable

# The table plus a portrait variant: images, 40 and 88 frames, 368p and 720p.
TABLE = [(1, 368, 640), (40, 368, 640), (40, 720, 1280), (88, 720, 1280), (40, 640, 368)]


def table(**kw) -> BucketTable:
    args = dict(batch_size=2, token_budget=None, max_upscale=1.0, temporal=4, spatial=8) | kw
    return BucketTable(TABLE, **args)


@pytest.mark.parametrize("frames, height, width, is_image, expected", [
    (1, 720, 1280, True, (1, 368, 640)),  # images only go to image buckets
    (120, 720, 1280, False, (88, 720, 1280)),  # enough frames and pixels: the largest bucket
    (60, 1080, 1920, False, (40, 720, 1280)),  # too short for 88: 40 frames at the larger size
    (120, 480, 854, False, (40, 368, 640)),  # 720p would upscale x1.5: 368p, 40 frames
    (120, 1280, 720, False, (40, 640, 368)),  # portrait: the portrait variant, not a landscape crop
    (50, 720, 720, False, (40, 368, 640)),  # square: both aspects crop alike; table order decides
])
def test_best_bucket_that_does_not_upscale(frames, height, width, is_image, expected):
    t = table()
    index, reason = t.assign(frames, height, width, is_image)
    assert reason == "" and t.buckets[index].as_tuple() == expected


@pytest.mark.parametrize("frames, height, width, is_image, reason, kw", [
    (30, 720, 1280, False, "too_short", {}),
    (100, 240, 426, False, "too_small", {}),
    (1, 200, 300, True, "too_small", {}),
    (100, 700, 1244, False, "", {"max_upscale": 1.1}),  # x1.03 to 720p is allowed under a 1.1 limit
])
def test_rejects_by_reason_and_upscale_limit(frames, height, width, is_image, reason, kw):
    index, why = table(**kw).assign(frames, height, width, is_image)
    assert why == reason and (index is None) == bool(reason)


def test_a_table_without_images_rejects_images_by_reason():
    t = BucketTable([(8, 64, 64)], batch_size=1, token_budget=None, max_upscale=1.0, temporal=4, spatial=8)
    assert t.assign(1, 64, 64, True) == (None, "no_image_bucket")


def test_token_budget_gives_each_bucket_its_batch_size():
    # latent positions: 1x46x80=3680, 10x46x80=36800, 10x90x160=144000, 22x90x160=316800
    t = table(token_budget=316800)
    assert t.latent_shapes[:4] == [(1, 46, 80), (10, 46, 80), (10, 90, 160), (22, 90, 160)]
    assert t.batch_sizes == [86, 8, 2, 1, 8]
    assert table().batch_sizes == [2] * 5  # no budget: data.batch_size everywhere
    with pytest.raises(ValueError, match=r"token_budget=1000 .*'40x368x640'"):
        table(token_budget=1000)


def _fill(batcher: BucketBatcher, index: int, n: int) -> None:
    for i in range(n):
        batcher.add(index, [0, index, i], {"key": f"{index}_{i}"})


def test_a_batch_never_mixes_buckets_and_the_mix_follows_image_fraction():
    t = BucketTable([(1, 64, 64), (8, 64, 64)], batch_size=2, token_budget=None, max_upscale=1.0, temporal=4, spatial=8)
    batcher = BucketBatcher(t, image_fraction=0.25, buffers=[[], []])
    _fill(batcher, 0, 16)
    _fill(batcher, 1, 16)
    kinds = []
    for _ in range(8):
        index, items = batcher.pop_ready()
        assert {ref[1] for ref, _ in items} == {index} and len(items) == 2
        kinds.append("I" if index == 0 else "V")
    assert "".join(kinds) == "VIVVVIVV" and batcher.mix_forced == 0  # 2 of 8 batches are images


def test_a_missing_kind_does_not_stall_the_mix():
    t = BucketTable([(1, 64, 64), (8, 64, 64)], batch_size=1, token_budget=None, max_upscale=1.0, temporal=4, spatial=8)
    batcher = BucketBatcher(t, image_fraction=0.5, buffers=[[], []])
    _fill(batcher, 1, 3)
    assert batcher.pop_ready() is None  # an image batch is due: videos wait ...
    _fill(batcher, 1, 6)
    out = []
    while (ready := batcher.pop_ready()) is not None:
        out.append(ready[0])
    assert out == [1] * 6 and batcher.mix_forced == 6  # ... until 4 batches pile up, then leave, counted
    assert [len(b) for b in batcher.buffers] == [0, 3]
