"""``cnnkit predict``: classify image files (or find the objects in them, for a detection run) with a run,
a checkpoint or an exported ONNX file."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="classify image files (or detect objects) with a trained run",
                              formatter_class=Formatter,
                              epilog="examples:\n  cnnkit predict runs/x digit.png\n"
                                     "  cnnkit predict runs/x a.png b.jpg --top-k 3 --format json\n"
                                     "  cnnkit predict model.onnx a.png\n"
                                     "  cnnkit predict runs/detector photo.jpg --conf 0.4 --save boxes/\n"
                                     "  cnnkit predict runs/sentiment --text \"an utterly charming film\"\n"
                                     "  cnnkit predict runs/sentiment reviews.txt --format json")
    p.add_argument("source", help="a run folder, a cnnkit checkpoint (.pt) or an exported .onnx file")
    p.add_argument("images", nargs="*", metavar="FILES",
                   help="PNG or JPEG files; for a text run, .txt files of one text per line; for a video or frames "
                        "run, clips (.npy, .npz, animated .gif, or a folder of frames)")
    p.add_argument("--text", action="append", default=[], metavar="TEXT",
                   help="text run: a text to classify (repeat for several)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--conf", type=float, default=0.25, help="detection: the lowest score kept")
    p.add_argument("--iou", type=float, default=0.6, help="detection: the IoU above which NMS drops the weaker "
                                                          "of two boxes of a class")
    p.add_argument("--save", metavar="DIR", help="detection: write each image with its boxes drawn into DIR; "
                                                 "segmentation: write each mask (class-index PNG) and an overlay; frames: "
                                                 "draw inputs, predicted and true frames (PNG) and keep the "
                                                 "predicted frames (.npy); reconstruction: each input and "
                                                 "its reconstruction side by side (PNG)")
    p.add_argument("--tile", type=int, default=None, metavar="SIDE",
                   help="segmentation: predict in SIDE x SIDE tiles with overlap (default: whole images up to "
                        "1024 px, valid-padding models always tile)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="forecast run: draw the history, the forecast and the last known steps' forecast against "
                        "their truth")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    for name in ("conf", "iou"):
        v = getattr(args, name)
        if not 0.0 <= v <= 1.0:
            raise UserError(f"--{name} must be between 0 and 1, got {v}")
    if args.tile is not None and args.tile < 8:
        raise UserError(f"--tile must be at least 8 pixels, got {args.tile}")
    if not args.images and not args.text:
        raise UserError("give the files to predict (images; for a text run, .txt files of one text per line) "
                        "or --text \"...\"")
    options = {"conf": args.conf, "iou": args.iou, "tile": args.tile, "save": args.save}
    if args.text or _is_text_source(args.source):
        results = _predict_texts(args)
        _print_texts(results, args.format)
        return 0
    if str(args.source).endswith(".onnx"):
        from cnnkit.tools.export import predict_onnx

        results = predict_onnx(args.source, args.images, top_k=args.top_k, **options)
    else:
        from cnnkit.inference import load_run_model, predict_files

        model, info = load_run_model(args.source)
        task = info["task"]
        if hasattr(task, "predict_paths"):  # series files (timeseries, forecast), read as the run's data was
            results = task.predict_paths(model, args.images, top_k=args.top_k, plot=args.plot, save=args.save)
            _print_series(results, args.format)
            return 0
        if args.plot is not None:
            raise UserError(f"--plot draws a forecast; {args.source!r} is a {task.name} run")
        results = predict_files(model, info, args.images, top_k=args.top_k, **options)
    detection = bool(results) and "detections" in results[0]
    segmentation = bool(results) and "shares" in results[0]
    reconstruction = bool(results) and "psnr" in results[0]
    if args.save is not None and not (segmentation or reconstruction):  # those wrote their files while predicting
        if not detection:
            raise UserError("--save draws boxes: it is for a detection run")
        from cnnkit.tasks.detection import save_drawn

        for r in results:
            r["saved"] = str(save_drawn(r, args.save))
    if args.format == "json":
        print(json.dumps(results, indent=2))
    elif segmentation:
        for r in results:
            shares = ", ".join(f"{c} {v:.1%}" for c, v in r["shares"].items())
            saved = f"  -> {r['mask']}" if r.get("mask") else ""
            print(f"{r['file']}: {shares}{saved}")
    elif reconstruction:
        for r in results:
            saved = f"  -> {r['saved']}" if r.get("saved") else ""
            print(f"{r['file']}: reconstruction mse {r['mse']:.5f}, psnr {r['psnr']:.2f} dB{saved}")
    elif detection:
        for r in results:
            found = ", ".join(f"{d['class']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]"
                              for d in r["detections"])
            print(f"{r['file']}: {found or 'nothing found'}")
    else:
        for r in results:
            tops = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"])
            print(f"{r['file']}: {tops}")
    return 0


def _is_text_source(source: str) -> bool:
    """Whether ``source`` (a run folder or checkpoint, or an ONNX file) is a text classifier, without
    loading its weights when it is a run folder."""
    from pathlib import Path

    p = Path(source)
    if p.is_dir() and (p / "meta.json").is_file():
        import json as _json

        try:
            return _json.loads((p / "meta.json").read_text()).get("task") == "text"
        except (OSError, ValueError):
            return False
    if p.suffix == ".onnx" and p.is_file():
        from cnnkit.tools.export import onnx_metadata

        return onnx_metadata(p).get("task") == "text"
    return False


def read_text_lines(files: list[str]) -> list[str]:
    """The texts of ``files``: one per non-empty line, UTF-8."""
    from pathlib import Path

    texts: list[str] = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise UserError(f"{f!r} does not exist" if not p.exists() else f"{f!r} is not a file")
        raw = p.read_bytes()
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise UserError(f"{f!r} is not UTF-8 text: line {line} has the byte 0x{raw[e.start]:02x}") from None
        lines = [line.strip() for line in content.splitlines() if line.strip()]
        if not lines:
            raise UserError(f"{f!r} holds no text (one text per line expected)")
        texts += lines
    return texts


def _predict_texts(args: argparse.Namespace) -> list[dict]:
    texts = list(args.text) + read_text_lines(args.images)
    empty = [i for i, t in enumerate(args.text) if not t.strip()]
    if empty:
        raise UserError(f"--text number {empty[0] + 1} is empty; give a text to classify")
    if str(args.source).endswith(".onnx"):
        from cnnkit.tools.export import predict_onnx_texts

        return predict_onnx_texts(args.source, texts, top_k=args.top_k)
    from cnnkit.inference import load_run_model

    model, info = load_run_model(args.source)
    task = info["task"]
    if task.name != "text":
        raise UserError(f"--text needs a text run; {args.source!r} is a {task.name} run (give image files)")
    return task.predict_texts(model, texts, top_k=args.top_k)


def _print_series(results: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(results, indent=2))
        return
    for r in results:
        if "forecast" in r:  # a forecaster: the next steps of each target
            for target, values in r["forecast"].items():
                print(f"{r['file']}: {target} next {len(values)}: {', '.join(f'{v:.4g}' for v in values)}")
            for target, b in (r.get("backtest") or {}).items():
                print(f"  {target}: the last {len(b['truth'])} known steps forecast with MAE {b['mae']:.4g}")
            if r.get("plot"):
                print(f"  plot: {r['plot']}")
        elif "future" in r:  # a frame predictor: the next frames of a clip
            scored = (f"; on its {r['truth_frames']} true next frames MSE {r['mse']:.4f} (copying the last frame "
                      f"{r['baseline_mse']:.4f})" if "mse" in r else "")
            saved = f"  -> {r['saved']}" if r.get("saved") else ""
            print(f"{r['clip']}: {r['future']} frames predicted from {r['frames_in']}{scored}{saved}")
        else:
            tops = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"])
            print(f"{r.get('series', r.get('clip'))}: {tops}")


def _print_texts(results: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for r in results:
        tops = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"])
        shown = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
        print(f"{shown!r}: {tops}")
