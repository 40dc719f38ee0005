"""Clips in files, for ``cnnkit predict`` and ``cnnkit eval`` of video and frames runs.

A clip file is one of:

* ``.npy``: an array ``(T, H, W)``, ``(T, C, H, W)`` or ``(T, H, W, C)`` (C of 1 or 3), uint8 (0..255)
  or float (0..1);
* ``.npz``: the same array under the key ``clip`` (or the file's only array);
* ``.gif``: an animated GIF, one frame per image (grey, or RGB for a 3-channel run); an image shown k
  times as long as the shortest counts k times (GIF writers merge repeated frames so);
* a folder of PNG / JPEG frames, read in the order of their names.

:func:`read_clip` gives ``uint8 (T, C, H, W)``; :func:`write_clip` writes ``.npy`` or ``.gif`` (the way
to keep a clip of the ``moving_mnist`` datasets to try predict on).

Example::

    clip = read_clip("clip.gif", channels=1)      # uint8 (T, 1, 64, 64)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.errors import UserError

CLIP_SUFFIXES = (".npy", ".npz", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
ALLOWED = ".npy (T, H, W) / (T, C, H, W), .npz with a 'clip' array, an animated .gif, or a folder of PNG/JPEG frames"


def read_clip(path: str | Path, channels: int = 1) -> np.ndarray:
    """The clip in ``path`` as ``uint8 (T, channels, H, W)``; anything else is one clear :class:`UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"clip {str(path)!r} does not exist")
    if p.is_dir():
        clip = _read_frames(p, channels)
    elif p.suffix.lower() == ".gif":
        clip = _read_gif(p, channels)
    elif p.suffix.lower() in (".npy", ".npz"):
        clip = _as_clip(_read_array(p), str(path), channels)
    else:
        raise UserError(f"clip {str(path)!r}: unknown kind of file; give {ALLOWED}")
    if len(clip) == 0:
        raise UserError(f"clip {str(path)!r} has no frames")
    return clip


def write_clip(path: str | Path, clip: np.ndarray, duration_ms: int = 100) -> Path:
    """Write ``clip`` (uint8 or [0, 1] float, ``(T, C, H, W)`` or ``(T, H, W)``) as ``.npy`` or an
    animated ``.gif``, atomically."""
    from cnnkit.atomic import atomic_write

    p = Path(path)
    clip = _as_clip(np.asarray(clip), str(path), None)
    if p.suffix.lower() == ".npy":
        atomic_write(p, lambda f: np.save(f, clip))
    elif p.suffix.lower() == ".gif":
        from PIL import Image

        frames = [Image.fromarray(fr[0] if fr.shape[0] == 1 else fr.transpose(1, 2, 0)) for fr in clip]
        atomic_write(p, lambda f: frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                                                 duration=duration_ms, loop=0))
    else:
        raise UserError(f"{str(path)!r}: a clip is written as .npy or .gif")
    return p


def _read_array(p: Path) -> np.ndarray:
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"clip {str(p)!r} is not a readable NumPy file: {e}") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.keys())
        if "clip" in keys:
            return data["clip"]
        if len(keys) == 1:
            return data[keys[0]]
        raise UserError(f"clip {str(p)!r} holds arrays {', '.join(keys)}; name the clip's array 'clip'")


def _as_clip(a: np.ndarray, name: str, channels: int | None) -> np.ndarray:
    """An array of frames as uint8 (T, C, H, W), C checked against ``channels`` (None: 1 or 3)."""
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min(initial=0.0) < 0.0 or a.max(initial=0.0) > 1.0:
            raise UserError(f"clip {name!r}: float pixel values must be finite and in [0, 1] (or give uint8 0..255)")
        a = np.rint(a * 255.0).astype(np.uint8)
    else:
        raise UserError(f"clip {name!r}: pixels must be uint8 (0..255) or float (0..1), got {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[1] not in (1, 3) and a.shape[-1] in (1, 3):
            a = a.transpose(0, 3, 1, 2)
    else:
        raise UserError(f"clip {name!r} has shape {tuple(a.shape)}; a clip is (T, H, W), (T, C, H, W) or "
                        f"(T, H, W, C)")
    if a.shape[1] not in (1, 3) or (channels is not None and a.shape[1] != channels):
        want = channels if channels is not None else "1 or 3"
        raise UserError(f"clip {name!r} has {a.shape[1]}-channel frames; the run takes {want}")
    return np.ascontiguousarray(a)


def _image_array(img, channels: int) -> np.ndarray:
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _read_gif(p: Path, channels: int) -> np.ndarray:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            frames, durations = [], []
            for fr in ImageSequence.Iterator(im):
                frames.append(_image_array(fr, channels))
                durations.append(int(fr.info.get("duration") or 0))
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"clip {str(p)!r} is not a readable GIF: {e}") from None
    # A GIF writer merges a frame equal to the one before into it (a longer duration): a frame shown
    # k times as long as the shortest is k frames of the clip.
    shortest = min((d for d in durations if d > 0), default=0)
    repeats = [max(1, round(d / shortest)) if shortest else 1 for d in durations]
    return np.stack([f for f, k in zip(frames, repeats) for _ in range(k)])


def _read_frames(folder: Path, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise UserError(f"clip folder {str(folder)!r} holds no PNG or JPEG frames")
    frames = []
    for f in files:
        try:
            with Image.open(f) as im:
                frames.append(_image_array(im, channels))
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"frame {str(f)!r} is not a readable image: {e}") from None
    sizes = {fr.shape for fr in frames}
    if len(sizes) > 1:
        raise UserError(f"clip folder {str(folder)!r}: frames of different sizes "
                        f"({', '.join(str(s[1:]) for s in sorted(sizes))})")
    return np.stack(frames)
