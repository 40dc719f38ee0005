"""Predicting with a run from the browser: the upload checked, the run's model loaded once, the task's
own prediction code called (the same calls as ``cnnkit predict``).

Example::

    models = ModelCache()
    image = check_image(open("digit.png", "rb").read())      # UploadRejected if not a small image
    predict_image(models, Path("runs/x"), image, "digit.png", top_k=3)
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from cnnkit.errors import UserError
from cnnkit.runs import RunFolder

#: The largest upload (bytes), the most pixels an uploaded image may have, the longest text (characters).
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_TEXT_CHARS = 5_000
MAX_TOP_K = 20

#: Pillow's name of each image format accepted, and the suffix the file is saved under for the model.
#: MPO is how Pillow names a JPEG with MPF data (what many cameras and phones write): a JPEG to the user.
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp",
           "TIFF": ".tif"}


class UploadRejected(UserError):
    """An upload or text the app will not take; ``status`` is the HTTP code it answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    format: str
    size: tuple[int, int]


def check_image(data: bytes) -> CheckedImage:
    """``data`` if it is an image of an accepted format that Pillow decodes whole; UploadRejected if not."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"the upload is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes "
                             f"({MAX_UPLOAD_BYTES // 2 ** 20} MiB)", 413)
    if not data:
        raise UploadRejected("the uploaded file is empty; choose an image file (PNG, JPEG, BMP, GIF, WEBP or TIFF)",
                             400)
    fmt = "image"
    try:
        with Image.open(BytesIO(data)) as im:
            fmt, size = im.format, im.size
            if fmt not in FORMATS:
                raise UploadRejected(f"the upload is a {fmt} image; allowed: {', '.join(FORMATS)}", 415)
            if size[0] * size[1] > MAX_PIXELS:
                raise UploadRejected(f"the image is {size[0]}x{size[1]} pixels; the limit is {MAX_PIXELS:,} pixels",
                                     413)
            im.load()  # decode it all: a truncated or corrupt file fails here, not in the model
    except UploadRejected:
        raise
    except Image.DecompressionBombError as e:
        raise UploadRejected(f"refusing the image: {e}", 413) from None
    except UnidentifiedImageError:
        raise UploadRejected(f"the upload is not an image (Pillow recognises no image format in it); allowed: "
                             f"{', '.join(FORMATS)}", 415) from None
    except (OSError, ValueError, SyntaxError) as e:  # a known format, broken: truncated, corrupt
        raise UploadRejected(f"the uploaded {fmt} image cannot be decoded: {e}", 415) from None
    return CheckedImage(data, fmt, size)


def check_text(text: str) -> str:
    """``text`` stripped, if it is not empty and not longer than :data:`MAX_TEXT_CHARS`."""
    if len(text) > MAX_TEXT_CHARS:
        raise UploadRejected(f"the text is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}", 413)
    if not text.strip():
        raise UploadRejected("the text is empty; type a text to classify", 400)
    return text.strip()


def check_conf(conf: float) -> float:
    """A detector's lowest score kept (``cnnkit predict --conf``): in (0, 1]."""
    if not 0.0 < conf <= 1.0:
        raise UserError(f"conf must be a score above 0 and at most 1, got {conf}")
    return conf


def check_top_k(top_k: int) -> int:
    if not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    return top_k


class ModelCache:
    """Loaded models by (checkpoint path, mtime): a run still training is reloaded when its checkpoint
    changes. The newest ``size`` stay; one lock serialises loading and predicting (CPU inference,
    one request at a time keeps the machine responsive)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.lock = threading.Lock()
        self._models: collections.OrderedDict[tuple[str, int], tuple[Any, dict[str, Any]]] = \
            collections.OrderedDict()

    def get(self, run_path: Path) -> tuple[Any, dict[str, Any]]:
        """The run's model and info (see :func:`cnnkit.inference.load_run_model`); call under ``lock``."""
        from cnnkit.inference import load_run_model

        ckpt = RunFolder(run_path).find_checkpoint("best")
        if not ckpt.resolve().is_relative_to(run_path.resolve()):  # as for the run's other files (listing.run_file)
            raise UserError(f"the checkpoint {ckpt.name} of run {run_path.name!r} is a link to a file outside the "
                            f"run folder; the app does not load it")
        key = (str(ckpt), ckpt.stat().st_mtime_ns)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        for old in [k for k in self._models if k[0] == key[0]]:  # an older version of this checkpoint
            del self._models[old]
        self._models[key] = load_run_model(ckpt, device="cpu")
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return self._models[key]


def predict_image(models: ModelCache, run_path: Path, image: CheckedImage, filename: str,
                  top_k: int, conf: float = 0.25) -> dict[str, Any]:
    """The run's prediction for one checked image, as ``cnnkit predict --format json`` gives it, plus the
    image's ``size`` (W, H) for drawing boxes; a classification run adds Grad-CAM, a segmentation run its
    mask drawn over the image (see :func:`mask_overlay`)."""
    from cnnkit.inference import predict_files

    with models.lock:
        model, info = models.get(run_path)
        task = info["task"]
        if task.name == "text":
            raise UserError(f"run {run_path.name!r} is a text run: type a text instead of uploading an image")
        if hasattr(task, "predict_paths"):
            raise UserError(f"run {run_path.name!r} is a {task.name} run, which predicts series or clip files; "
                            f"use 'cnnkit predict' for it")
        fd, tmp = tempfile.mkstemp(suffix=FORMATS[image.format], prefix="cnnkit-serve-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(image.data)
            if task.name == "segmentation":
                result = mask_overlay(model, info, tmp)
            else:
                result = predict_files(model, info, [tmp], top_k=top_k, conf=conf)[0]  # conf: detectors
            if task.name == "classification":
                result.update(gradcam_for(model, info, tmp, result["top"][0]["label"]))
        finally:
            os.unlink(tmp)
    return {**result, "file": filename, "task": task.name, "image_size": list(image.size)}


def gradcam_for(model: Any, info: dict[str, Any], path: str, label: int) -> dict[str, str]:
    """``{"gradcam": PNG data URI}``: where the network looked for class ``label`` in the image at ``path``
    (the run's input size), or ``{"gradcam_note": why not}`` for a network without convolutions."""
    import base64

    import numpy as np
    import torch

    from cnnkit.inference import load_image, normalise
    from cnnkit.tools.report.gradcam import overlay_png

    pixels = load_image(path, info["input_shape"])[None]
    x = torch.from_numpy(normalise(pixels, info["mean"], info["std"]))
    try:
        png = overlay_png(model, x, np.transpose(pixels[0], (1, 2, 0)) / 255.0, label)
    except UserError as e:  # an MLP: no convolution to look through
        return {"gradcam_note": str(e)}
    return {"gradcam": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


def mask_overlay(model: Any, info: dict[str, Any], path: str) -> dict[str, Any]:
    """A segmentation run's ``predict_files`` result for the image at ``path``, with ``mask_overlay`` (a PNG
    data URI: the image in grey at its own size, each foreground class tinted, as report.html draws masks)
    and ``mask_legend`` (``[{"class", "color"}]``, the tint of each foreground class).

    The mask is the one ``cnnkit predict --save`` writes (its class-index PNG, read back), so the picture
    shows exactly the prediction whose shares are listed; the temporary files' names are not returned.
    """
    import base64

    import numpy as np
    from PIL import Image

    from cnnkit.data.files import load_image
    from cnnkit.inference import predict_files
    from cnnkit.tools.report.vision import class_colours, overlay_mask

    task = info["task"]
    with tempfile.TemporaryDirectory(prefix="cnnkit-serve-") as folder:
        result = predict_files(model, info, [path], save=folder)[0]
        with Image.open(result["mask"]) as im:
            mask = np.asarray(im, dtype=np.int64)
    original = load_image(path, info["input_shape"], resize=False).transpose(1, 2, 0) / 255.0
    if original.shape[-1] == 1:
        original = np.repeat(original, 3, axis=-1)
    colours = class_colours(task.num_classes)
    rgb = np.round(overlay_mask(original, mask, colours) * 255).clip(0, 255).astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    legend = [{"class": task.classes[k], "color": "#" + "".join(f"{round(255 * v):02x}" for v in colours[k])}
              for k in range(1, task.num_classes)]
    return {**result, "mask": None, "overlay": None, "mask_legend": legend,
            "mask_overlay": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")}


def predict_text(models: ModelCache, run_path: Path, text: str, top_k: int) -> dict[str, Any]:
    """A text run's top classes for ``text``, as ``cnnkit predict --text`` gives them."""
    with models.lock:
        model, info = models.get(run_path)
        task = info["task"]
        if task.name != "text":
            raise UserError(f"run {run_path.name!r} is a {task.name} run: upload an image instead of a text")
        result = task.predict_texts(model, [text], top_k=top_k)[0]
    return {**result, "task": task.name}
