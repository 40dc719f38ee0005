"""Moving MNIST (cnnkit.data.video): the generator (deterministic, digits inside the frame, bouncing off
the edges, the "which digit moves" labels), the copy-last-frame baseline, and the two datasets
(moving_mnist for task frames, moving_mnist_clips for task video) with held-out digits.

Most tests draw from a small synthetic pool of 28x28 "digits" (fast); one checks the default pool is
the bundled MNIST subset, and the dataset tests replace the bundled digits by the synthetic pool
(the data.clips / frames / future / digits keys come from a config with those fields added)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit.data.video.dataset as video_dataset
from cnnkit.config import DataConfig
from cnnkit.data import DATASETS
from cnnkit.data.video import (FrameClips, LabelledClips, blank_mse, bounce, copy_last_mse, digit_split,
                               moving_mnist, moving_mnist_clips)
from cnnkit.errors import UserError

PATCH = 28


def synthetic_pool(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 28x28 images, each a random blob of ink somewhere in the patch, and classes 0..9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, PATCH, PATCH), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(2, 14, size=2)
        h, w = rng.integers(6, 13, size=2)
        images[i, r:r + h, c:c + w] = rng.integers(60, 256, size=(h, w))
    return images, np.arange(n) % 10


def render_by_hand(pool: np.ndarray, index: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    n, frames, digits = positions.shape[:3]
    out = np.zeros((n, frames, 1, size, size), dtype=np.uint8)
    for i in range(n):
        for t in range(frames):
            for d in range(digits):
                r, c = positions[i, t, d]
                out[i, t, 0, r:r + PATCH, c:c + PATCH] = np.maximum(out[i, t, 0, r:r + PATCH, c:c + PATCH],
                                                                    pool[index[i, d]])
    return out


def centroid(img: np.ndarray) -> np.ndarray:
    """The (row, column) centre of mass of an image's pixel values."""
    img = img.astype(np.float64)
    rows, cols = np.indices(img.shape)
    return np.array([(rows * img).sum(), (cols * img).sum()]) / img.sum()


# --------------------------------------------------------------------------- the generator


def test_clips_are_deterministic_per_seed():
    pool, _ = synthetic_pool()
    a = moving_mnist(6, 8, size=48, digits=2, seed=3, images=pool)
    b = moving_mnist(6, 8, size=48, digits=2, seed=3, images=pool)
    assert a.dtype == np.uint8 and a.shape == (6, 8, 1, 48, 48)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, moving_mnist(6, 8, size=48, digits=2, seed=4, images=pool))
    assert a[:, 1:].std() > 0 and not np.array_equal(a[:, 0], a[:, 1])  # they move


def test_frames_are_the_digits_pasted_at_their_positions():
    pool, _ = synthetic_pool()
    clips, info = moving_mnist(5, 7, size=40, digits=3, seed=0, images=pool, return_info=True)
    assert np.array_equal(clips, render_by_hand(pool, info.index, info.positions, 40))
    assert info.moving.all()


def test_digits_stay_inside_the_frame():
    pool, _ = synthetic_pool()
    size = 40
    clips, info = moving_mnist(20, 40, size=size, digits=1, seed=1, images=pool, speed=(3.0, 4.0),
                               return_info=True)
    assert info.positions.min() >= 0 and info.positions.max() <= size - PATCH
    # one digit: every frame holds all of its ink, none cut off at an edge
    ink = pool[info.index[:, 0]].astype(np.int64).sum(axis=(1, 2))
    assert np.array_equal(clips.astype(np.int64).sum(axis=(2, 3, 4)), np.repeat(ink[:, None], 40, axis=1))


def test_bounce_reflects_at_both_ends():
    pos, vel = bounce(np.array([1.0, 8.0]), np.array([-3.0, 2.5]), 5, 10.0)
    np.testing.assert_allclose(pos[:, 0], [1, 2, 5, 8, 9])  # 1 - 3 = -2 -> 2; 8 + 3 = 11 -> 9
    np.testing.assert_allclose(pos[:, 1], [8, 9.5, 7, 4.5, 2])  # 10.5 -> 9.5
    np.testing.assert_allclose(vel[:, 0], [-3, 3, 3, 3, -3])
    np.testing.assert_allclose(vel[:, 1], [2.5, -2.5, -2.5, -2.5, -2.5])


def test_a_single_digit_bounces_off_the_edges():
    """Tracked by the centre of mass of the frame's pixels only: the step changes sign on an axis only
    where the digit touches an edge, it does so in long clips, and the speed is kept between bounces."""
    pool, _ = synthetic_pool()
    size, frames = 48, 60
    lo_speed, hi_speed = 2.0, 4.0
    clips, info = moving_mnist(12, frames, size=size, digits=1, seed=2, images=pool, speed=(lo_speed, hi_speed),
                               return_info=True)
    limit = size - PATCH
    flips = 0
    for i in range(len(clips)):
        own = centroid(pool[info.index[i, 0]])  # the ink's centre inside its patch
        corner = np.array([centroid(clips[i, t, 0]) - own for t in range(frames)])  # (frames, 2)
        np.testing.assert_allclose(corner, info.positions[i, :, 0], atol=1e-6)  # centroid tracks the patch
        step = np.diff(corner, axis=0)
        assert np.abs(step).max() <= hi_speed + 1 + 1e-9  # rounding moves a step by a pixel at most
        for axis in range(2):
            s = step[:, axis]
            for t in range(1, len(s)):
                if s[t - 1] * s[t] < 0:  # a turn at frame t: the digit is at an edge
                    flips += 1
                    p = corner[t, axis]
                    assert p <= hi_speed + 1 or p >= limit - hi_speed - 1, (i, t, axis, p)
            # and the velocity the generator kept flips there too
            v = info.velocity[i, :, 0, axis]
            turned = np.flatnonzero(v[1:] * v[:-1] < 0) + 1
            for t in turned:
                assert info.positions[i, t, 0, axis] <= hi_speed + 1 or info.positions[i, t, 0, axis] >= \
                    limit - hi_speed - 1
    assert flips >= 12  # bouncing does happen (60 frames in a 20-pixel range)


def test_labels_are_the_class_of_the_one_moving_digit():
    pool, classes = synthetic_pool()
    clips, labels, info = moving_mnist_clips(30, 6, size=48, digits=3, seed=0, images=pool, labels=classes,
                                             return_info=True)
    assert clips.shape == (30, 6, 1, 48, 48) and labels.dtype == np.int64
    assert np.array_equal(info.moving.sum(axis=1), np.ones(30))
    assert np.array_equal(clips, render_by_hand(pool, info.index, info.positions, 48))
    for i in range(30):
        digit_classes = classes[info.index[i]]
        assert len(set(digit_classes.tolist())) == 3  # distinct classes: the label names one digit
        still = [d for d in range(3) if (info.positions[i, :, d] == info.positions[i, 0, d]).all()]
        moved = [d for d in range(3) if d not in still]
        assert len(moved) == 1 and len(still) == 2
        assert labels[i] == digit_classes[moved[0]]
    assert len(set(labels.tolist())) > 3
    again = moving_mnist_clips(30, 6, size=48, digits=3, seed=0, images=pool, labels=classes)
    assert np.array_equal(again[0], clips) and np.array_equal(again[1], labels)


def test_copy_last_frame_baseline():
    pool, _ = synthetic_pool()
    clips = moving_mnist(8, 6, size=40, seed=0, images=pool)
    x, y = clips[:, :4], clips[:, 4:]
    want = float(((torch.from_numpy(y).double() / 255 - torch.from_numpy(x[:, -1:]).double() / 255) ** 2).mean())
    got = copy_last_mse(x, y, chunk=3)
    assert got > 0
    assert got == pytest.approx(want, rel=1e-6)
    assert copy_last_mse(x.astype(np.float32) / 255, y.astype(np.float32) / 255) == pytest.approx(want, rel=1e-6)
    assert copy_last_mse(clips[:, :1], clips[:, :1]) == 0.0
    assert blank_mse(y) == pytest.approx(float((torch.from_numpy(y).double() / 255).pow(2).mean()), rel=1e-6)
    assert blank_mse(y) > 0


def test_arguments_are_checked():
    pool, classes = synthetic_pool()
    with pytest.raises(ValueError, match="28x28"):
        moving_mnist(2, 3, size=20, images=pool)
    with pytest.raises(ValueError, match="classes"):
        moving_mnist_clips(2, 3, digits=4, images=pool[classes < 3], labels=classes[classes < 3])
    with pytest.raises(ValueError, match="labels"):
        moving_mnist_clips(2, 3, images=pool)


def test_the_default_digits_are_the_bundled_mnist_subset():
    from cnnkit.data.builtin import _mnist5k_arrays

    images, _ = _mnist5k_arrays(DataConfig())
    clips, info = moving_mnist(2, 3, size=28, digits=1, seed=0, return_info=True)
    # a 28x28 frame holds the digit exactly, unmoved
    assert np.array_equal(clips[:, 0, 0], images[info.index[:, 0], 0])


# --------------------------------------------------------------------------- the datasets


class VideoDataConfig(DataConfig):
    """DataConfig with the keys the Moving MNIST datasets read (they may not be in DataConfig yet)."""

    clips: int | None = None
    frames: int | None = None
    future: int | None = None
    digits: int | None = None


@pytest.fixture
def small_digits(monkeypatch):
    """The bundled digits replaced by 200 synthetic ones (20 per class)."""
    images, labels = synthetic_pool(200, seed=5)
    monkeypatch.setattr(video_dataset, "_mnist5k_arrays", lambda cfg: (images[:, None], labels.astype(np.int64)))
    return images, labels


def test_moving_mnist_dataset_for_frame_prediction(small_digits):
    cfg = VideoDataConfig(name="moving_mnist", clips=20, frames=4, future=3, image_size=40, val_fraction=0.25)
    bundle = DATASETS.get("moving_mnist")(cfg)
    assert isinstance(bundle.train, FrameClips) and (len(bundle.train), len(bundle.val)) == (15, 5)
    assert bundle.input_shape == (4, 1, 40, 40) and bundle.extra["task"] == "frames" and bundle.classes == []
    x, y = bundle.train[2]
    assert x.dtype == torch.float32 and x.shape == (4, 1, 40, 40) and y.shape == (3, 1, 40, 40)
    clip = bundle.train.clips[2].float() / 255
    assert torch.equal(x, clip[:4]) and torch.equal(y, clip[4:])  # inputs, then the frames after them
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    bx, by = bundle.train.batch([2, 0])
    assert torch.equal(bx[0], x) and torch.equal(by[0], y)
    assert bundle.extra["copy_last_mse"]["val"] > 0
    assert bundle.extra["copy_last_mse"]["train"] == pytest.approx(bundle.train.copy_last_mse())
    assert bundle.extra["blank_mse"]["val"] == pytest.approx(blank_mse(bundle.val.clips[:, 4:].numpy()))
    again = DATASETS.get("moving_mnist")(cfg)
    assert torch.equal(again.train.clips, bundle.train.clips) and torch.equal(again.val.clips, bundle.val.clips)
    other = DATASETS.get("moving_mnist")(cfg.model_copy(update={"split_seed": 1}))
    assert not torch.equal(other.train.clips, bundle.train.clips)


def test_train_and_val_clips_use_disjoint_digits(small_digits):
    images, _ = small_digits
    cfg = VideoDataConfig(name="moving_mnist_clips", clips=30, frames=3, image_size=28, val_fraction=0.2, digits=1)
    tr_images, tr_labels, va_images, va_labels = digit_split(cfg)
    assert len(tr_images) + len(va_images) == 200 and len(va_images) == 40
    assert np.bincount(va_labels, minlength=10).tolist() == [4] * 10  # by class
    train_keys = {im.tobytes() for im in tr_images}
    assert not any(im.tobytes() in train_keys for im in va_images)
    # with one digit in a 28x28 frame every frame is a pool image: each split's come from its own digits
    bundle = DATASETS.get("moving_mnist_clips")(cfg)
    assert isinstance(bundle.train, LabelledClips) and bundle.extra["task"] == "video"
    val_keys = {im.tobytes() for im in va_images}
    for split, keys in ((bundle.train, train_keys), (bundle.val, val_keys)):
        for clip in split.clips.numpy():
            assert clip[0, 0].tobytes() in keys


def test_moving_mnist_clips_dataset_for_classification(small_digits):
    cfg = VideoDataConfig(name="moving_mnist_clips", clips=24, frames=5, image_size=48, val_fraction=0.25)
    bundle = DATASETS.get("moving_mnist_clips")(cfg)
    assert bundle.classes == [str(i) for i in range(10)] and bundle.input_shape == (5, 1, 48, 48)
    assert (len(bundle.train), len(bundle.val)) == (18, 6)
    clip, label = bundle.train[0]
    assert clip.shape == (5, 1, 48, 48) and clip.dtype == torch.float32 and isinstance(label, int)
    assert bundle.train.targets == bundle.train.labels.tolist() and label == bundle.train.targets[0]
    assert len(bundle.train.subset([0, 2])) == 2


def test_dataset_options_are_checked(small_digits):
    with pytest.raises(UserError, match="val_fraction"):
        DATASETS.get("moving_mnist")(VideoDataConfig(name="moving_mnist", clips=10, val_fraction=0.0))
    with pytest.raises(UserError, match="not an option of moving_mnist"):
        DATASETS.get("moving_mnist")(DataConfig(name="moving_mnist", lookback=4))
    with pytest.raises(UserError, match="data.future"):
        DATASETS.get("moving_mnist")(DataConfig(name="moving_mnist", horizon=3))
    with pytest.raises(UserError, match="data.subset"):
        DATASETS.get("moving_mnist")(DataConfig(name="moving_mnist", subset=10))
    with pytest.raises(UserError, match="positive integer"):
        DATASETS.get("moving_mnist_clips")(VideoDataConfig(name="moving_mnist_clips", frames=0))
    with pytest.raises(UserError, match="28x28"):
        DATASETS.get("moving_mnist_clips")(VideoDataConfig(name="moving_mnist_clips", clips=10, image_size=20))
