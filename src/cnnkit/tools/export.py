"""``cnnkit export``: a trained run as ONNX, TorchScript or safetensors, each checked after writing.

- **onnx**: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based
  exporter. torch 2.14's default (dynamo) exporter needs the ``onnxscript`` package,
  which is not a cnnkit dependency; the legacy exporter is still shipped (with a
  deprecation warning, silenced here). The input ``input`` (N, C, H, W) and output
  ``logits`` (N, classes) have a dynamic batch dimension. The file's
  ``metadata_props`` carry what prediction needs: ``classes`` (JSON list),
  ``input_shape`` ([C, H, W]), ``mean`` and ``std`` (JSON lists), ``cnnkit_version``,
  plus ``config`` (JSON) and ``source_run``. After writing, onnxruntime runs the file
  on a batch of validation images and on batches of 1 and 7, and its logits must
  match torch's within 1e-4 (max abs difference, float32); otherwise the export fails
  and no file is left behind.
- **torchscript**: ``torch.jit.trace`` (deprecated upstream, still shipped), saved
  with the same metadata as ``cnnkit.json`` in ``_extra_files``; reloaded and
  compared with torch at batch 1 and 7.
- **safetensors**: the ``state_dict`` with the metadata (strings) in the header;
  reloaded, every tensor compared bit for bit and the rebuilt model's outputs too.

:func:`predict_onnx` runs an exported ``.onnx`` file with onnxruntime alone (no
torch model is built) and gives the same JSON as ``cnnkit predict RUN_DIR``.

Text runs (``task: text``): the input ``input`` is int64 token ids (N, T) (0 = padding,
1 = unknown). A model that masks its padding (``variable_length``: kim_cnn, dpcnn) gets a
dynamic length axis ("length") as well as the dynamic batch, and its export is also checked on
batches cut shorter and padded longer than the traced one; any other text model takes exactly
``max_length`` tokens. The metadata adds ``tokenizer`` (the JSON of ``Tokenizer.to_dict()``),
``max_length`` and ``variable_length``; ``mean`` and ``std`` are [0.0] and [1.0]. The check batch
is the run's validation texts, encoded as ``predict`` encodes them (or random ids in [2, V) when
the data is gone). :func:`predict_onnx_texts` classifies raw texts with the file alone (the
tokeniser rebuilt from its metadata), with the JSON of ``cnnkit predict RUN_DIR --text``;
:func:`onnx_task` tells which task a file was exported from.

Example::

    result = export("runs/20261130-101500-layers-mnist5k-1a2b3c", "onnx")
    result.path, result.checks["max_abs_diff"]
    predict_onnx(result.path, ["digit.png"], top_k=3)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cnnkit.atomic import default_file_mode
from cnnkit.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn

__all__ = ["ExportResult", "ExportCheckError", "export", "export_onnx", "export_torchscript", "export_safetensors",
           "predict_onnx", "predict_onnx_texts", "onnx_metadata", "onnx_task", "load_torchscript",
           "load_safetensors"]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
DEFAULT_OPSET = 17
ONNX_TOLERANCE = 1e-4
CHECK_IMAGES = 64
INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: Texts per onnxruntime call in :func:`predict_onnx_texts` (as ``TextTask.predict_texts`` batches them).
TEXT_BATCH = 256
META_KEYS = ("classes", "input_shape", "mean", "std", "cnnkit_version")


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the torch model (a failure, exit code 1)."""


@dataclass
class ExportResult:
    path: Path
    format: str
    size_bytes: int
    checks: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _quiet_export():
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        yield


def metadata_for(info: dict[str, Any], source: str | os.PathLike | None = None) -> dict[str, str]:
    """The string metadata every export carries: classes, input shape, normalisation, versions, config."""
    import cnnkit

    cfg = info.get("config")
    meta = {"classes": json.dumps([str(c) for c in info["classes"]]),
            "input_shape": json.dumps([int(v) for v in info["input_shape"]]),
            "mean": json.dumps([float(v) for v in info["mean"]]),
            "std": json.dumps([float(v) for v in info["std"]]),
            "cnnkit_version": cnnkit.__version__}
    if cfg is not None:
        meta["config"] = json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    if source is not None:
        meta["source_run"] = str(source)
    if info.get("dataset"):
        meta["dataset"] = str(info["dataset"])
    task = info.get("task")
    meta["task"] = getattr(task, "name", None) or "classification"
    if info.get("pad_multiple"):
        meta["pad_multiple"] = str(int(info["pad_multiple"]))
    if meta["task"] == "text":  # what reading a new text needs: the tokeniser and the length rule
        tokenizer = getattr(task, "tokenizer", None)
        if tokenizer is not None:
            meta["tokenizer"] = json.dumps(tokenizer.to_dict())
        meta["max_length"] = str(int(getattr(task, "max_length", None) or info["input_shape"][-1]))
        meta["variable_length"] = json.dumps(bool(getattr(task, "variable_length", False)))
    return meta


def parse_metadata(meta: dict[str, str], where: str) -> dict[str, Any]:
    """Decode the JSON fields of exported metadata; a missing key is a UserError naming the file."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise UserError(f"{where} lacks cnnkit metadata ({', '.join(missing)}); export it with 'cnnkit export'")
    try:
        out: dict[str, Any] = {k: json.loads(meta[k]) for k in ("classes", "input_shape", "mean", "std")}
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: cnnkit metadata is not valid JSON ({e})") from None
    out["cnnkit_version"] = meta["cnnkit_version"]
    if "config" in meta:
        out["config"] = json.loads(meta["config"])
    out["pad_multiple"] = int(meta.get("pad_multiple", 1))
    for k in ("source_run", "dataset"):
        if k in meta:
            out[k] = meta[k]
    out["task"] = meta.get("task", "classification")
    try:
        if "tokenizer" in meta:
            out["tokenizer"] = json.loads(meta["tokenizer"])
        if "max_length" in meta:
            out["max_length"] = int(meta["max_length"])
        if "variable_length" in meta:
            out["variable_length"] = bool(json.loads(meta["variable_length"]))
    except (json.JSONDecodeError, ValueError) as e:
        raise UserError(f"{where}: cnnkit text metadata is not valid ({e})") from None
    return out


def _is_text(info: dict[str, Any]) -> bool:
    return getattr(info.get("task"), "name", None) == "text"


def _check_inputs(info: dict[str, Any], n: int = CHECK_IMAGES) -> tuple["torch.Tensor", str]:
    """A batch of normalised validation images (at least 7), or random inputs if the data is unavailable.
    For a text run: int64 token ids of validation texts (see :func:`_text_check_inputs`)."""
    import torch

    if _is_text(info):
        return _text_check_inputs(info, n)
    cfg = info.get("config")
    try:
        from cnnkit.data import load_data
        from cnnkit.data.loaders import make_loader

        bundle = load_data(cfg.data, task=cfg.task)
        task = info.get("task")
        loader = make_loader(bundle.val, batch_size=n, mean=info["mean"], std=info["std"], shuffle=False, seed=0,
                             device=torch.device("cpu"), augment=None, collate=getattr(task, "collate", None),
                             transform=task.transform(train=False) if task is not None else None)
        x, _ = next(iter(loader))
        source = f"{len(x)} validation {getattr(task, 'unit', 'images')}"
    except Exception as e:  # the data may be gone; the export check still runs
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, *info["input_shape"], generator=g)
        source = f"{n} random inputs (validation data unavailable: {e})"
    x = x.float().contiguous()
    while len(x) < 7:
        x = torch.cat([x, x])
    return x, source


def _text_check_inputs(info: dict[str, Any], n: int = CHECK_IMAGES) -> tuple["torch.Tensor", str]:
    """Token ids (N, T) int64 (N >= 7) of the run's first ``n`` validation texts, encoded as ``predict``
    encodes texts (the run's tokeniser, cut to ``max_length``, padded by the task's collate); when the data
    is unavailable, random ids in [2, V) with random lengths (the rest padding, as real batches are)."""
    import torch

    task = info["task"]
    cfg = info.get("config")
    try:
        from cnnkit.data import load_data
        from cnnkit.data.text.dataset import texts_of

        bundle = load_data(cfg.data, task=cfg.task)
        texts = list(texts_of(bundle.val))[:n]
        if not texts:
            raise ValueError("the validation split holds no text")
        x = task.encode_texts(texts)
        source = f"{len(x)} validation texts"
    except Exception as e:  # the data may be gone; the export check still runs
        vocab, length = (int(v) for v in info["input_shape"][-2:])
        g = torch.Generator().manual_seed(0)
        low = 2 if vocab > 2 else 1  # ids 0 (padding) and 1 (unknown) are special
        x = torch.randint(low, max(vocab, low + 1), (n, length), generator=g, dtype=torch.long)
        keep = torch.randint(1, length + 1, (n,), generator=g)
        keep[0] = length  # one full-length row
        x = x.masked_fill(torch.arange(length)[None, :] >= keep[:, None], 0)
        source = f"{n} random token sequences (validation data unavailable: {e})"
    x = x.long().contiguous()
    while len(x) < 7:
        x = torch.cat([x, x])
    return x, source


def _other_lengths(x: "torch.Tensor") -> list[tuple[str, "torch.Tensor"]]:
    """For a model with a dynamic length: the first 7 rows of ``x`` cut shorter and padded longer than
    ``x`` (with the padding id 0), each a batch of another length than the traced one."""
    import torch.nn.functional as F

    t = x.shape[1]
    out = []
    if t > 1:
        short = max(1, t // 2)
        out.append((f"length_{short}", x[:7, :short].contiguous()))
    out.append((f"length_{t + 5}", F.pad(x[:7], (0, 5), value=0).contiguous()))
    return out


def _max_diff(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _tmp_path(path: Path) -> Path:
    """A temp file beside ``path``, with the mode a plain ``open`` would give (0644 under the usual
    umask, as run files; mkstemp's is 0600), renamed over ``path`` once written and checked."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write --out {str(path)!r}: {e.strerror or e}") from None
    os.fchmod(fd, default_file_mode())
    os.close(fd)
    return Path(tmp)


def _ort_session(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise UserError(f"cannot load ONNX model {str(path)!r}: {e}") from None


# --------------------------------------------------------------------------- ONNX

def export_onnx(model: "nn.Module", info: dict[str, Any], path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                check_inputs: "torch.Tensor | None" = None, source: str | None = None,
                tolerance: float = ONNX_TOLERANCE) -> dict[str, Any]:
    """Write ``model`` to ``path`` as ONNX with cnnkit metadata, then check it with onnxruntime.

    Returns the checks (max abs differences at batch 1, 7 and the whole check batch). Raises
    :class:`ExportCheckError` (and leaves no file) when onnxruntime and torch differ by more than ``tolerance``.
    """
    import onnx
    import torch

    path = Path(path)
    model = model.cpu().eval()
    x = check_inputs if check_inputs is not None else _check_inputs(info)[0]
    names = list(getattr(model, "output_names", (OUTPUT_NAME,)))
    # A segmentation network takes images of any size (its output has the input's size).
    spatial = {2: "height", 3: "width"} if getattr(info.get("task"), "name", None) == "segmentation" else {}
    # A text model that masks its padding takes token ids of any length; its logits have none.
    text = _is_text(info)
    dynamic_length = text and bool(getattr(info["task"], "variable_length", False))
    if text:
        x = x.long()
    input_axes = {0: "batch", 1: "length"} if dynamic_length else {0: "batch", **spatial}
    batches = [("batch_1", x[:1]), ("batch_7", x[:7]), (f"batch_{len(x)}", x)]
    if dynamic_length:
        batches += _other_lengths(x)
    tmp = _tmp_path(path)
    try:
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(model, (x[:1],), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes={INPUT_NAME: input_axes,
                                            **{k: {0: "batch", **spatial} for k in names}},
                              do_constant_folding=True)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for k, v in metadata_for(info, source).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.producer_name = "cnnkit"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

        sess = _ort_session(tmp, threads=torch.get_num_threads())
        checks: dict[str, Any] = {"tolerance": tolerance, "opset": opset}
        if text:
            checks["length"] = "dynamic" if dynamic_length else int(x.shape[1])
        with torch.no_grad():
            for name, batch in batches:
                refs = model(batch)
                refs = [r.numpy() for r in (refs if isinstance(refs, (tuple, list)) else (refs,))]
                try:
                    gots = sess.run(names, {INPUT_NAME: batch.numpy()})
                except Exception as e:  # onnxruntime's own errors: a shape the graph did not keep dynamic
                    raise ExportCheckError(f"onnxruntime cannot run the exported model on input of shape "
                                           f"{tuple(batch.shape)} ({name}): {e}") from None
                diffs = []
                for out_name, got, ref in zip(names, gots, refs):
                    if got.shape != ref.shape:
                        what = "length" if name.startswith("length_") else "batch"
                        raise ExportCheckError(f"onnxruntime gave {out_name} of shape {got.shape} for input of "
                                               f"shape {tuple(batch.shape)}, torch {ref.shape}: the {what} "
                                               f"dimension is not dynamic")
                    # Boxes are in pixels: their difference is measured relative to the image's scale.
                    scale = max(1.0, float(abs(ref).max())) if out_name == "boxes" else 1.0
                    diffs.append(_max_diff(got, ref) / scale)
                checks[f"max_abs_diff_{name}"] = max(diffs)
                if names == [OUTPUT_NAME]:
                    checks[f"same_argmax_{name}"] = bool((gots[0].argmax(1) == refs[0].argmax(1)).all())
        checks["max_abs_diff"] = max(v for k, v in checks.items() if k.startswith("max_abs_diff_"))
        checks["ok"] = checks["max_abs_diff"] <= tolerance
        if not checks["ok"]:
            raise ExportCheckError(f"onnxruntime's logits differ from torch's by {checks['max_abs_diff']:.3g} "
                                   f"(> {tolerance:g}); the ONNX file was not written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return checks


def onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The cnnkit metadata of an exported ONNX file, decoded (classes, input_shape, mean, std, ...)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file {str(p)!r} does not exist")
    sess = _ort_session(p, threads=1)
    return parse_metadata(dict(sess.get_modelmeta().custom_metadata_map), repr(str(p)))


def onnx_task(path: str | os.PathLike) -> str:
    """The task an exported ONNX file was made from ("classification" when its metadata names none),
    read from its metadata alone (the graph is not prepared to run)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file {str(p)!r} does not exist")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's decode errors, or an unreadable file
        raise UserError(f"cannot load ONNX model {str(p)!r}: {e}") from None
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    return meta.get("task") or "classification"


def _softmax(logits: "np.ndarray") -> "np.ndarray":
    import numpy as np

    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_onnx(path: str | os.PathLike, images: Sequence[str | os.PathLike], top_k: int = 5,
                 **options: Any) -> list[dict]:
    """Classify image files with an exported ONNX model in onnxruntime; the JSON of ``cnnkit predict``."""
    import numpy as np

    from cnnkit.data.files import load_image, normalise
    from cnnkit.tasks.classification import format_predictions

    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file {str(p)!r} does not exist")
    sess = _ort_session(p)
    meta = parse_metadata(dict(sess.get_modelmeta().custom_metadata_map), repr(str(p)))
    if meta["task"] in ("timeseries", "forecast"):
        raise UserError(f"{str(p)!r} is a {meta['task']} model: its input is a prepared series (N, C, L) float32 "
                        f"(onnxruntime takes it as is); cnnkit predict reads series files with the run folder")
    if meta["task"] == "text":
        raise UserError(f"{str(p)!r} is a text classifier: pass the texts with --text \"...\" or as .txt files "
                        f"(one text per line), e.g. cnnkit predict {p.name} --text \"a fine film\"")
    batch = np.stack([load_image(f, meta["input_shape"]) for f in images])
    x = normalise(batch, meta["mean"], meta["std"])
    name = sess.get_inputs()[0].name
    if meta["task"] == "segmentation":
        return _segment_onnx(sess, meta, images, options.get("save"))
    if meta["task"] == "detection":
        import torch

        from cnnkit.inference import image_size
        from cnnkit.models.detection.yolo import postprocess
        from cnnkit.tasks.detection import format_detections

        boxes, scores = sess.run(["boxes", "scores"], {name: x})
        size = tuple(meta["input_shape"][1:])
        preds = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), size,
                            options.get("conf", 0.25), options.get("iou", 0.6))
        return format_detections([str(f) for f in images], preds, meta["classes"], size,
                                 [image_size(f) for f in images])
    logits = sess.run(None, {name: x})[0]
    return format_predictions([str(f) for f in images], _softmax(logits), meta["classes"], top_k)


def predict_onnx_texts(path: str | os.PathLike, texts: Sequence[str], top_k: int = 5) -> list[dict]:
    """Classify raw texts with an exported text model in onnxruntime: the tokeniser is rebuilt from the
    file's metadata and the texts encoded and padded as ``TextTask.encode_texts`` does; the JSON of
    ``cnnkit predict RUN_DIR --text`` (per text: ``text``, ``top``, ``probabilities``)."""
    from cnnkit.data.text.dataset import PadCollate, encode
    from cnnkit.data.text.tokenize import Tokenizer
    from cnnkit.tasks.classification import format_predictions

    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX file {str(p)!r} does not exist")
    sess = _ort_session(p)
    where = repr(str(p))
    meta = parse_metadata(dict(sess.get_modelmeta().custom_metadata_map), where)
    if meta["task"] != "text":
        raise UserError(f"{where} is a {meta['task']} model, not a text classifier: give it image files, not "
                        f"--text or .txt files")
    missing = [k for k in ("tokenizer", "max_length", "variable_length") if k not in meta]
    if missing:
        raise UserError(f"{where} lacks the text metadata ({', '.join(missing)}) that reading texts needs; export "
                        f"the run again with 'cnnkit export'")
    tokenizer = Tokenizer.from_dict(meta["tokenizer"])
    max_length = int(meta["max_length"])
    collate = PadCollate(None if meta["variable_length"] else max_length)
    name = sess.get_inputs()[0].name
    texts = list(texts)
    out: list[dict] = []
    for i in range(0, len(texts), TEXT_BATCH):
        chunk = texts[i:i + TEXT_BATCH]
        ids = encode(tokenizer, chunk, max_length)
        x = collate([(t, 0) for t in ids])[0].numpy()
        logits = sess.run([OUTPUT_NAME], {name: x})[0]
        for r in format_predictions(chunk, _softmax(logits), meta["classes"], top_k):
            out.append({"text": r["file"], "top": r["top"], "probabilities": r["probabilities"]})
    return out


def _segment_onnx(sess, meta: dict[str, Any], images: Sequence[str | os.PathLike], save: str | None) -> list[dict]:
    """Each image at its own size (reflection-padded to the network's multiple, the output cut back),
    as :func:`cnnkit.tasks.segmentation.segment` does in torch; the JSON of ``cnnkit predict``."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cnnkit.data.files import load_image, normalise
    from cnnkit.tasks.segmentation import class_shares, save_mask

    cfg = meta.get("config") or {}
    size = (cfg.get("data") or {}).get("image_size")
    m = int(meta.get("pad_multiple", 1))
    name = sess.get_inputs()[0].name
    out = []
    for f in images:
        original = load_image(f, meta["input_shape"], resize=False)
        h0, w0 = original.shape[-2:]
        x = torch.from_numpy(normalise(original[None], meta["mean"], meta["std"]))
        if size is not None:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else x
        logits = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])[..., :h, :w]
        if (h, w) != (h0, w0):
            logits = F.interpolate(logits, size=(h0, w0), mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].to(torch.uint8)
        k = len(meta["classes"])
        result = {"file": str(f), "size": [int(h0), int(w0)], "shares": class_shares(mask, meta["classes"]),
                  "mask": None, "overlay": None}
        if save is not None:
            result["mask"], result["overlay"] = (str(p) for p in save_mask(np.asarray(original), mask, str(f),
                                                                            save, k))
        out.append(result)
    return out


# --------------------------------------------------------------------------- TorchScript

def export_torchscript(model: "nn.Module", info: dict[str, Any], path: str | os.PathLike, *,
                       check_inputs: "torch.Tensor | None" = None, source: str | None = None,
                       tolerance: float = 1e-5) -> dict[str, Any]:
    """``torch.jit.trace`` the model and save it with the metadata as ``cnnkit.json`` in ``_extra_files``;
    reload and compare with torch at batch 1 and 7."""
    import torch

    path = Path(path)
    model = model.cpu().eval()
    x = check_inputs if check_inputs is not None else _check_inputs(info)[0]
    meta = metadata_for(info, source)
    if _is_text(info):
        x = x.long()
    batches = [("batch_1", x[:1]), ("batch_7", x[:7])]
    if _is_text(info) and getattr(info["task"], "variable_length", False):  # the trace must not fix the length
        batches += _other_lengths(x)
    tmp = _tmp_path(path)
    try:
        with _quiet_export(), torch.no_grad():
            traced = torch.jit.trace(model, (x[:2],))
            torch.jit.save(traced, str(tmp), _extra_files={"cnnkit.json": json.dumps(meta)})
        loaded, got_meta = load_torchscript(tmp)
        checks: dict[str, Any] = {"tolerance": tolerance}
        with torch.no_grad():
            for name, batch in batches:
                try:
                    got = loaded(batch)
                except Exception as e:  # a traced size that does not fit this batch
                    raise ExportCheckError(f"the traced TorchScript model fails on input of shape "
                                           f"{tuple(batch.shape)} ({name}): {e}") from None
                checks[f"max_abs_diff_{name}"] = _max_diff(got, model(batch))
        checks["max_abs_diff"] = max(v for k, v in checks.items() if k.startswith("max_abs_diff_"))
        checks["metadata_roundtrip"] = got_meta["classes"] == [str(c) for c in info["classes"]]
        checks["ok"] = checks["max_abs_diff"] <= tolerance and checks["metadata_roundtrip"]
        if not checks["ok"]:
            raise ExportCheckError(f"the reloaded TorchScript model differs from torch by "
                                   f"{checks['max_abs_diff']:.3g} or lost its metadata; not written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return checks


def load_torchscript(path: str | os.PathLike) -> tuple["torch.jit.ScriptModule", dict[str, Any]]:
    """A saved TorchScript export and its decoded cnnkit metadata."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"TorchScript file {str(p)!r} does not exist")
    files = {"cnnkit.json": ""}
    try:
        with _quiet_export():
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=files)
    except Exception as e:
        raise UserError(f"cannot load TorchScript file {str(p)!r}: {e}") from None
    raw = json.loads(files["cnnkit.json"]) if files["cnnkit.json"] else {}
    return module.eval(), parse_metadata(raw, repr(str(p)))


# --------------------------------------------------------------------------- safetensors

def export_safetensors(model: "nn.Module", info: dict[str, Any], path: str | os.PathLike, *,
                       check_inputs: "torch.Tensor | None" = None, source: str | None = None) -> dict[str, Any]:
    """The state_dict as safetensors with the metadata in the header; reload and compare."""
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(path)
    model = model.cpu().eval()
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", **metadata_for(info, source)}
    tmp = _tmp_path(path)
    try:
        save_file(state, str(tmp), metadata=meta)
        back = load_file(str(tmp))
        checks: dict[str, Any] = {"tensors": len(state),
                                  "tensors_equal": set(back) == set(state)
                                  and all(torch.equal(back[k], state[k]) for k in state)}
        if "config" in meta:
            rebuilt, _ = load_safetensors(tmp)
            x = check_inputs if check_inputs is not None else _check_inputs(info)[0]
            with torch.no_grad():
                checks["max_abs_diff_batch_7"] = _max_diff(rebuilt(x[:7]), model(x[:7]))
        checks["ok"] = checks["tensors_equal"] and checks.get("max_abs_diff_batch_7", 0.0) == 0.0
        if not checks["ok"]:
            raise ExportCheckError("the reloaded safetensors weights differ from the model's; not written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return checks


def load_safetensors(path: str | os.PathLike) -> tuple["nn.Module", dict[str, Any]]:
    """Rebuild the model of a cnnkit safetensors export from its header's config and load its weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from cnnkit.config import validate
    from cnnkit.models import create_model

    p = Path(path)
    if not p.is_file():
        raise UserError(f"safetensors file {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
        state = load_file(str(p))
    except Exception as e:
        raise UserError(f"cannot read safetensors file {str(p)!r}: {e}") from None
    meta = parse_metadata(raw, repr(str(p)))
    if "config" not in meta:
        raise UserError(f"{str(p)!r} carries no cnnkit config, so its network cannot be rebuilt")
    cfg = validate(meta["config"])
    model = create_model(cfg.model, tuple(meta["input_shape"]), len(meta["classes"]))
    model.load_state_dict(state)
    return model.eval(), {**meta, "config": cfg, "checkpoint": str(p)}


# --------------------------------------------------------------------------- the command

def export(run_dir: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None, *,
           opset: int = DEFAULT_OPSET, checkpoint: str = "best") -> ExportResult:
    """Export the run in ``run_dir`` (its best checkpoint) to ``out`` (default ``RUN_DIR/model.<ext>``)."""
    from cnnkit.inference import load_run_model

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    if fmt == "onnx" and not 7 <= opset <= 21:
        raise UserError(f"--opset {opset} is out of range; the exporter writes opsets 7 to 21 (default {DEFAULT_OPSET})")
    src = Path(run_dir)
    if src.is_dir() and (src / "checkpoints" / "int8.pt").exists() and not (src / "checkpoints" / "best.pt").exists():
        raise UserError(f"{str(src)!r} is an int8 run (cnnkit compress --quantize int8); export supports float runs")
    model, info = load_run_model(src, which=checkpoint)
    if out is None:
        path = (src if src.is_dir() else src.parent) / f"model{FORMATS[fmt]}"
    else:
        path = Path(out)
        if path.is_dir() or str(out).endswith(("/", os.sep)):  # a folder: the file goes inside it
            path = path / f"model{FORMATS[fmt]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of --out {str(path)!r}: {e.strerror}") from None
    x, check_source = _check_inputs(info)
    source = str(src.resolve())
    if info["task"].name == "detection":
        if fmt != "onnx":
            raise UserError(f"--format {fmt}: a detector exports to onnx (boxes and scores before NMS); "
                            f"its weights are in the run's checkpoints")
        from cnnkit.models.detection.yolo import PreNMS, YOLODetector

        if not isinstance(model, YOLODetector):
            from cnnkit.models.registry import list_models

            yolo = [n for n in list_models(task="detection") if n.startswith("yolo")]
            raise UserError(f"ONNX export of detectors covers cnnkit's own ({', '.join(yolo)}); "
                            f"{type(model).__name__} ({info['config'].model.name}) is not exported yet: use the "
                            f"run folder with cnnkit predict/eval")
        model = PreNMS(model)
    if info["task"].name == "segmentation":
        from cnnkit.tasks.segmentation import is_valid_padding

        if fmt == "onnx" and is_valid_padding(model):
            raise UserError("ONNX export of segmentation covers 'same'-padding networks (output the size of the "
                            "input); this one has valid padding and predicts by overlap-tile: use the run folder "
                            "with cnnkit predict, or train it with model.options.padding=same")
        m = int(getattr(model, "pad_multiple", 1) or 1)
        info = {**info, "pad_multiple": m}
        h, w = x.shape[-2:]
        if h % m or w % m:  # the check images, padded as predict pads them
            import torch.nn.functional as F

            x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect")
    if info["task"].name == "instance":
        raise UserError("export of instance-segmentation runs (Mask R-CNN) is not available; use the run folder "
                        "with cnnkit predict and eval")
    if info["task"].name == "text" and getattr(info["task"], "tokenizer", None) is None:
        raise UserError(f"{str(src)!r} is a text run without its tokeniser (checkpoint meta 'tokenizer'); an "
                        f"export could not read new texts: export a run trained by this cnnkit")
    if fmt == "onnx":
        checks = export_onnx(model, info, path, opset=opset, check_inputs=x, source=source)
    elif fmt == "torchscript":
        checks = export_torchscript(model, info, path, check_inputs=x, source=source)
    else:
        checks = export_safetensors(model, info, path, check_inputs=x, source=source)
    checks["inputs"] = check_source
    return ExportResult(path, fmt, path.stat().st_size, checks, metadata_for(info, source))
