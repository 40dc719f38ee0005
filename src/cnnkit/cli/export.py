"""``cnnkit export``: a run as ONNX, TorchScript or safetensors, checked after writing.

The library side is :mod:`cnnkit.tools.export`.
"""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter
from cnnkit.tools.export import DEFAULT_OPSET, FORMATS

_EPILOG = """\
The file carries the class names, input size [C,H,W], normalisation mean/std and the
cnnkit version (ONNX: metadata_props; TorchScript: _extra_files 'cnnkit.json';
safetensors: the header). Every export is reloaded and compared with torch before it
is kept (ONNX: onnxruntime at batch 1, 7 and 64 within 1e-4).

examples:
  cnnkit export runs/20261130-101500-layers-mnist5k-1a2b3c              # runs/.../model.onnx
  cnnkit export runs/x --format onnx --out lenet.onnx --opset 17
  cnnkit predict lenet.onnx digit.png --format json                     # onnxruntime, no torch model
  cnnkit export runs/x --format torchscript
  cnnkit export runs/x --format safetensors --out weights/lenet.safetensors
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a run to ONNX, TorchScript or safetensors (checked)",
                              formatter_class=Formatter, epilog=_EPILOG,
                              description="Export a trained run's network with the metadata prediction needs, "
                                          "and check the written file against torch.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", dest="export_format", choices=list(FORMATS), default="onnx",
                   help="file format (default onnx)")
    p.add_argument("--out", metavar="PATH", help="output file or folder (default RUN_DIR/model.<ext>)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.tools.export import export

    r = export(args.run_dir, args.export_format, args.out, opset=args.opset, checkpoint=args.checkpoint)
    c = r.checks
    print(f"exported {r.path} ({r.format}, {r.size_bytes:,} bytes)")
    if r.format == "onnx":
        print(f"check: onnxruntime vs torch on {c['inputs']}: max |diff| {c['max_abs_diff']:.3g} "
              f"(batch 1: {c['max_abs_diff_batch_1']:.3g}, batch 7: {c['max_abs_diff_batch_7']:.3g}), "
              f"tolerance {c['tolerance']:g}: ok; opset {c['opset']}, dynamic batch"
              + {None: "", "dynamic": " and length"}.get(c.get("length"), f", length {c.get('length')}"))
    elif r.format == "torchscript":
        print(f"check: reloaded TorchScript vs torch: max |diff| {c['max_abs_diff']:.3g} (batch 1 and 7), "
              f"metadata in _extra_files['cnnkit.json']: ok")
    else:
        print(f"check: {c['tensors']} tensors reloaded bit-exact; rebuilt model max |diff| "
              f"{c.get('max_abs_diff_batch_7', 0.0):.3g}: ok")
    m = r.metadata
    print(f"metadata: {len(json.loads(m['classes']))} classes, input_shape {m['input_shape']}, mean {m['mean']}, "
          f"std {m['std']}, cnnkit {m['cnnkit_version']}")
    return 0
