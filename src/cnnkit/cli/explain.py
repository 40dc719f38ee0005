"""``cnnkit explain``: the course's arithmetic written out, step by step.

The sub-commands (``conv``, ``conv1d``, ``maxpool``, ``avgpool``, ``l2pool``, ``activation``,
``shapes``, ``optimizers``, ``backprop``, ``iou``, ``nms``, ``text``, ``attention``) call :mod:`cnnkit.explain` (and the NumPy
reference engine's backprop explainer); this module parses, prints and checks
the options. Every handler prints to stdout and returns the exit code; user
mistakes raise :class:`cnnkit.errors.UserError` (the main CLI prints it and exits 2)::

    p = argparse.ArgumentParser(); sub = p.add_subparsers()
    add_parser(sub)
    args = p.parse_args(["explain", "avgpool", "--example", "course"])
    args.func(args)   # prints, returns 0
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError, did_you_mean

EXAMPLES = ("course",)

_WINDOW_HELP = {
    "conv": "a 2-D convolution (cross-correlation, like torch), every window written out",
    "maxpool": "max pooling, every window written out",
    "avgpool": "average pooling, every window written out",
    "l2pool": "L2 pooling (square root of the sum of squares), every window written out",
}

_WINDOW_EPILOG = """\
matrices: rows separated by ';', values by spaces or commas (fractions like 1/9 work).
padding: an int (symmetric), 'valid' (none) or 'same' (TF rule, also for stride > 1:
out = ceil(in/stride), the odd pixel of padding on the bottom/right).
pool stride defaults to the window size (as torch), conv stride to 1.

examples:
  cnnkit explain {op} --example course
  cnnkit explain {op} --input "3 3 2 1 0; 0 0 1 3 1; 3 1 2 2 3; 2 0 0 2 2; 2 0 0 0 1" {extra}--stride 2 --padding same
  cnnkit explain {op} --example course --format json
  cnnkit explain {op} --example course --save frames.gif      (or frames.png: a grid of panels)
"""

_CONV1D_EPILOG = """\
For output i, tap p of the kernel reads position t = i*stride + p*dilation - (zeros before):
y[i] = bias + sum_p w[p] * x[t] (a cross-correlation, as torch's conv1d); positions outside the
series read a padded zero.
series and kernel: values separated by commas or spaces (fractions like 1/3 work); one that
starts with '-' needs '=': --kernel=-1,0,1. Without --series: 1,3,2,5,4,6,9,8; without --kernel: 1,0,-1.
padding: valid (none, the default), same (out = ceil(L/stride), the odd zero at the end), causal
((k-1)*dilation zeros before, none after: output i never reads a position after i*stride), or an
int (zeros at both ends). dilation d: the taps are d apart, skipping the positions between.

examples:
  cnnkit explain conv1d
  cnnkit explain conv1d --series 1,3,2,5,4,6,9,8 --kernel 1,0,-1 --padding causal
  cnnkit explain conv1d --kernel 1,1,1 --dilation 2 --padding causal --format json
  cnnkit explain conv1d --series "2 4 6 8 10" --kernel 1/3,1/3,1/3 --stride 2 --padding same --bias 0.5
"""

_ACTIVATION_EPILOG = """\
NAME: sigmoid, tanh, relu, leaky_relu (--slope, default 0.1: max(0.1x, x)), elu (--alpha),
maxout (--pieces, default 2). Maxout keeps the largest of each group of --pieces consecutive
values of a row: the values are the pieces' outputs z_k = w_k.x + b_k, so a row "z1 z2" gives
the course's max(w1.x + b1, w2.x + b2). Without --input a sample row is used.

examples:
  cnnkit explain activation relu --example course
  cnnkit explain activation leaky_relu --input "-2 -1 0 1 2" --slope 0.2
  cnnkit explain activation maxout --input "1 -2 3 0; -1 -1 2 5" --pieces 2
  cnnkit explain activation elu --plot elu.png
"""

_SHAPES_EPILOG = """\
TARGET is a registered model name (lenet5, resnet18, ...) or a YAML config (its model.layers
or model.name; key.path=value overrides may follow). The input shape is --input, else the
config's model.input, else the dataset's known shape (mnist5k 1x28x28, digits 1x8x8,
cifar* 3x32x32), else the model's default input. Two numbers V,L are a text input (token ids);
with --signal, C,L is a time series of C channels and L steps.

examples:
  cnnkit explain shapes lenet5
  cnnkit explain shapes configs/lenet5_mnist5k.yaml
  cnnkit explain shapes resnet18 --input 3,32,32
  cnnkit explain shapes lenet5 --format json
"""

_OPT_EPILOG = """\
functions: quadratic f = 0.5*(x^2 + 10 y^2) from (-4, 2), 100 steps;
rosenbrock f = (1-x)^2 + 100 (y-x^2)^2 from (-1.5, 2), 2000 steps.
Default learning rates (quadratic / rosenbrock): sgd 0.15 / 0.001, momentum 0.15 / 0.002,
adagrad 1.0 / 0.1, adadelta 1.0 / 1.0, rmsprop 0.05 / 0.005, adam 0.3 / 0.02.

examples:
  cnnkit explain optimizers
  cnnkit explain optimizers --function rosenbrock --plot rosenbrock.png
  cnnkit explain optimizers --steps 20 --show 5 --format json
"""

_BACKPROP_EPILOG = """\
examples:
  cnnkit explain backprop configs/lenet5_mnist5k.yaml
  cnnkit explain backprop configs/lenet5_mnist5k.yaml --format json
"""

_IOU_EPILOG = """\
boxes: "x1 y1 x2 y2", the top-left then the bottom-right corner (y grows downwards), with x2 > x1
and y2 > y1; spaces or commas (a comma form that starts with '-' needs '=': --a=-3,-1,1,0.5).
Without --a/--b (or with --example course): A = (1, 1, 6, 5),
B = (3, 2, 8, 7), IoU = 9/36 = 0.25.
variants: giou (minus the empty part of the smallest enclosing box), diou (minus the squared
centre distance over the enclosing diagonal squared), ciou (diou minus an aspect-ratio term);
--all shows the four.

examples:
  cnnkit explain iou
  cnnkit explain iou --a "0 0 4 4" --b "2 2 6 6" --variant giou
  cnnkit explain iou --all --format json
  cnnkit explain iou --all --save iou.png
"""

_NMS_EPILOG = """\
boxes file: a JSON list of {"box": [x1, y1, x2, y2], "score": s, "class": c} ("class", an int or
a name, may be left out). Without --boxes (or with --example course): 6 boxes around a cat
(class 0) and a dog (class 1).
A box is suppressed when its IoU with a kept, better-scored box is > --iou (as torchvision.ops.nms);
boxes scored below --conf are dropped first. --per-class runs it in each class apart (batched NMS).

examples:
  cnnkit explain nms
  cnnkit explain nms --per-class
  cnnkit explain nms --boxes detections.json --iou 0.45 --conf 0.25
  cnnkit explain nms --example course --format json
  cnnkit explain nms --save nms.gif      (or nms.png: a grid of panels)
"""

_TEXT_EPILOG = """\
RUN is a text run (task: text): its folder or a checkpoint. The method is said in every output:
max-over-time (Kim's CNN): each filter of width k keeps the n-gram that gave its largest value;
  an n-gram's push = sum over the filters it won of (filter value x dense weight of the predicted
  class), its share of the predicted class's logit: bias + all pushes = the logit, exactly.
  'vs CLASS' is the same share of logit(predicted) - logit(runner-up).
occlusion (char_cnn, dpcnn, layer lists; or --method occlusion): each token in turn is replaced
  by <unk>; its push = how much the predicted class's probability drops.
--save FILE.html: the sentence with its words highlighted (green toward the prediction, red
against), a legend and the tables; FILE.png: the same as a figure.

examples:
  cnnkit explain text runs/sentiment "an utterly charming film"
  cnnkit explain text runs/sentiment "not good, not bad" --top 3 --format json
  cnnkit explain text runs/sentiment "an utterly charming film" --save why.html
  cnnkit explain text runs/sentiment "an utterly charming film" --method occlusion --save why.png
"""

_ATTENTION_EPILOG = """\
RUN is an image run (its folder or a checkpoint) whose network has attention blocks: a layer list with
se, cbam, eca, nonlocal or attention_pool layers, or an se_resnet* model. IMAGE is read as cnnkit
predict reads it (resized to the run's input, normalised with its mean and std). One forward pass in
eval mode records, for each block:
  channel weights (se, eca, cbam): the gate in (0, 1) each channel is multiplied by;
  spatial map (cbam: the sigmoid weight of each position; attention_pool: the softmax weight of each
  position, summing to 1; nonlocal: the attention each position receives, averaged over the queries).
--save FILE.png: the image, each spatial map over it, each block's channel weights as bars.

examples:
  cnnkit explain attention runs/se_digits digit.png
  cnnkit explain attention runs/se_digits digit.png --top 10 --format json
  cnnkit explain attention runs/se_digits digit.png --save attention.png
"""

# --------------------------------------------------------------------------- output helpers

def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _clean(o: Any):
    """Non-finite floats -> None so the output is strict JSON."""
    import numpy as np

    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def print_json(obj: Any) -> None:
    print(json.dumps(_clean(obj), indent=2, ensure_ascii=False, default=_json_default, allow_nan=False))


def _example(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in EXAMPLES:
        raise UserError(f"--example {value!r} is not known{did_you_mean(value, EXAMPLES)}; allowed: "
                        f"{', '.join(EXAMPLES)}")
    return value


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="text", choices=("text", "json"), help="output format (default text)")


# --------------------------------------------------------------------------- handlers

def _run_window(args: argparse.Namespace) -> int:
    from cnnkit.explain import ops, plots

    op = args.explain_op
    if args.decimals < 0:
        raise UserError(f"--decimals {args.decimals} is not allowed; use an int >= 0")
    if args.save:
        plots.check_path(args.save, (".png", ".gif"), "--save")
    if _example(args.example):
        given = [f for f, v in (("--input", args.input), ("--kernel", getattr(args, "kernel", None)),
                                ("--size", getattr(args, "size", None)), ("--stride", args.stride),
                                ("--padding", args.padding)) if v is not None]
        if given:
            raise UserError(f"--example course sets the input, window, stride and padding itself; "
                            f"drop {', '.join(given)} or drop --example")
        res = ops.course_example(op)
    else:
        if args.input is None:
            raise UserError(f"explain {op} needs --input \"3 3 2; 0 0 1; 3 1 2\" (rows by ';'), "
                            f"or --example course")
        x = ops.parse_matrix(args.input, "--input")
        kernel = ops.parse_matrix(args.kernel, "--kernel") if getattr(args, "kernel", None) is not None else None
        res = ops.explain_window_op(op, x, kernel=kernel, size=getattr(args, "size", None), stride=args.stride,
                                    padding=args.padding if args.padding is not None else 0)
    saved = plots.save_window_frames(res, args.save) if args.save else None
    if args.format == "json":
        out = ops.to_json(res)
        if saved:
            out["saved"] = saved
        print_json(out)
    else:
        print(ops.render_text(res, decimals=args.decimals))
        if saved:
            cut = f" (the first {saved['frames']} of {saved['total_steps']} steps)" \
                if saved["frames"] < saved["total_steps"] else ""
            print(f"saved {saved['frames']} frame{'s' if saved['frames'] != 1 else ''} to {saved['path']}{cut}")
    return 0


def _run_conv1d(args: argparse.Namespace) -> int:
    from cnnkit.explain import conv1d as c1

    options = {"kernel": args.kernel if args.kernel is not None else c1.DEFAULT_KERNEL,
               "stride": args.stride if args.stride is not None else 1,
               "dilation": args.dilation if args.dilation is not None else 1,
               "padding": args.padding if args.padding is not None else "valid",
               "bias": args.bias if args.bias is not None else 0.0}
    res = c1.default_example(**options) if args.series is None else c1.explain_conv1d(args.series, **options)
    if args.format == "json":
        print_json(c1.to_json(res))
    else:
        print(c1.render_text(res))
    return 0


def _run_activation(args: argparse.Namespace) -> int:
    from cnnkit.explain import activations as act
    from cnnkit.explain import ops, plots

    name = act.canonical_name(args.name)
    if args.plot:
        plots.check_path(args.plot, (".png",), "--plot")
    params = {"slope": args.slope, "alpha": args.alpha, "pieces": args.pieces}
    if _example(args.example):
        if args.input is not None:
            raise UserError("--example course sets the input itself; drop --input or drop --example")
        res = act.course_example(name, **params)
    else:
        x = ops.parse_matrix(args.input, "--input") if args.input is not None else None
        res = act.explain_activation(name, x, **params)
    plotted = plots.plot_activation(name, args.plot, slope=args.slope, alpha=args.alpha) if args.plot else None
    if args.format == "json":
        out = act.to_json(res)
        if plotted:
            out["plot"] = plotted
        print_json(out)
    else:
        print(act.render_text(res))
        if plotted:
            what = " (an illustrative 2-piece maxout on a scalar x)" if name == "maxout" else ""
            print(f"saved the curve and its derivative on [-5, 5]{what} to {plotted}")
    return 0


def _run_shapes(args: argparse.Namespace) -> int:
    from cnnkit.explain import shapes

    shape = shapes.parse_input_shape(args.input, signal=args.signal)
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes {args.num_classes} is not allowed; use a positive int")
    res = shapes.explain_shapes(args.target, input_shape=shape, num_classes=args.num_classes,
                                overrides=args.overrides, signal=args.signal)
    if args.format == "json":
        print_json(shapes.to_json(res))
    else:
        print(shapes.render_text(res))
    return 0


def _run_optimizers(args: argparse.Namespace) -> int:
    from cnnkit.explain import optimizers as opt
    from cnnkit.explain import plots

    if args.plot:
        plots.check_path(args.plot, (".png",), "--plot")
    if args.show < 0:
        raise UserError(f"--show {args.show} is not allowed; use an int >= 0")
    res = opt.run_optimizers(args.function, steps=args.steps, show=args.show)
    plotted = plots.plot_optimizers(res, args.plot) if args.plot else None
    if args.format == "json":
        out = opt.to_json(res)
        if plotted:
            out["plot"] = plotted
        print_json(out)
    else:
        print(opt.render_text(res))
        if plotted:
            print(f"saved the trajectories over the contour plot to {plotted}")
    return 0


def _run_backprop(args: argparse.Namespace) -> int:
    from cnnkit.config import load_config

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} is not allowed; use a positive int")
    cfg = load_config(args.config, args.overrides)
    from cnnkit.explain.backprop import explain_backprop, render_backprop_text

    result = explain_backprop(cfg, batch_size=args.batch_size)
    if args.format == "json":
        print_json(result)
    else:
        print(render_backprop_text(result))
    return 0


def _run_iou(args: argparse.Namespace) -> int:
    from cnnkit.explain import detection as det

    if args.save:
        from cnnkit.explain import plots

        plots.check_path(args.save, (".png",), "--save")
    shown = det.variants_to_show(args.variant, args.all)
    given = [f for f, v in (("--a", args.a), ("--b", args.b)) if v is not None]
    if _example(args.example) and given:
        raise UserError(f"--example course sets both boxes itself; drop {', '.join(given)} or drop --example")
    if len(given) == 1:
        missing = "--b" if args.a is not None else "--a"
        raise UserError(f"explain iou needs both boxes: add {missing} \"x1 y1 x2 y2\" (or give neither for "
                        f"the worked example)")
    example = not given
    a = det.COURSE_BOX_A if example else det.parse_box(args.a, "--a")
    b = det.COURSE_BOX_B if example else det.parse_box(args.b, "--b")
    res = det.explain_iou(a, b)
    saved = det.save_iou_picture(res, args.save, shown) if args.save else None
    if args.format == "json":
        out = det.iou_to_json(res, shown)
        if example:
            out["example"] = "course"
        if saved:
            out["saved"] = saved
        print_json(out)
    else:
        print(det.render_iou_text(res, shown, example=example))
        if saved:
            print(f"saved both boxes, their intersection and the enclosing box to {saved}")
    return 0


def _run_nms(args: argparse.Namespace) -> int:
    from cnnkit.explain import detection as det

    if args.save:
        from cnnkit.explain import plots

        plots.check_path(args.save, (".png", ".gif"), "--save")
    iou = det.parse_threshold(args.iou, "--iou")
    conf = det.parse_threshold(args.conf, "--conf")
    if _example(args.example) and args.boxes is not None:
        raise UserError("--example course sets the boxes itself; drop --boxes or drop --example")
    boxes = det.course_boxes() if args.boxes is None else det.load_boxes(args.boxes, "--boxes")
    res = det.explain_nms(boxes, iou_threshold=iou, conf_threshold=conf, per_class=args.per_class)
    if args.boxes is None:
        res["example"] = "course"
    saved = det.save_nms_frames(res, args.save) if args.save else None
    if args.format == "json":
        out = det.nms_to_json(res)
        if saved:
            out["saved"] = saved
        print_json(out)
    else:
        print(det.render_nms_text(res))
        if saved:
            cut = f" (the first {saved['frames'] - 1} of {saved['total_steps']} rounds)" \
                if saved["frames"] - 1 < saved["total_steps"] else ""
            print(f"saved {saved['frames']} frame{'s' if saved['frames'] != 1 else ''} (each round, then the "
                  f"result) to {saved['path']}{cut}")
    return 0


def _run_text(args: argparse.Namespace) -> int:
    if not args.sentence.strip():
        raise UserError("the sentence is empty; give a text to explain, e.g. "
                        "cnnkit explain text RUN \"an utterly charming film\"")
    if args.top < 0:
        raise UserError(f"--top {args.top} is not allowed; use an int >= 0 (0: every n-gram)")
    from cnnkit.explain import text as tx

    if args.save:
        tx.check_save_path(args.save)
    model, task, _ = tx.load_text_run(args.run)
    res = tx.explain_text(model, task, args.sentence, top=args.top or None, method=args.method)
    res["run"] = str(args.run)
    saved = tx.save(res, args.save) if args.save else None
    if args.format == "json":
        if saved:
            res["saved"] = saved
        print_json(res)
    else:
        print(tx.render_text(res))
        if saved:
            print(f"\nsaved the sentence with its tokens highlighted ({res['method']}) to {saved}")
    return 0


def _run_attention(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise UserError(f"--top {args.top} is not allowed; use an int >= 0 (0: every channel)")
    from cnnkit.explain import attention as att

    if args.save:
        att.check_save_path(args.save)
    model, info = att.load_attention_run(args.run)
    res = att.explain_attention(model, info, args.image, top=args.top)
    res["run"] = str(args.run)
    saved = att.save_png(res, args.save) if args.save else None
    if args.format == "json":
        out = att.to_json(res)
        if saved:
            out["saved"] = saved
        print_json(out)
    else:
        print(att.render_text(res))
        if saved:
            cut = (f" (the first {saved['panels']} of {saved['total_panels']})"
                   if saved["panels"] < saved["total_panels"] else "")
            print(f"\nsaved the image, the spatial maps over it and the channel weights ({saved['panels']} "
                  f"panels{cut}) to {saved['path']}")
    return 0


# --------------------------------------------------------------------------- parser

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``explain`` and its sub-subcommands to the main CLI's ``subparsers``."""
    fmt = Formatter
    p = subparsers.add_parser(
        "explain", help="the course's arithmetic step by step: conv, conv1d, pooling, activations, shapes, optimisers, "
                        "IoU, NMS, why a text CNN classified a sentence, what attention blocks did to an image",
        description="Write out the arithmetic behind the course's examples, computed with the NumPy "
                    "reference engine.", formatter_class=fmt,
        epilog="examples:\n  cnnkit explain avgpool --example course\n  cnnkit explain conv --example course\n"
               "  cnnkit explain conv1d --padding causal --dilation 2\n"
               "  cnnkit explain activation relu --example course\n  cnnkit explain shapes lenet5\n"
               "  cnnkit explain optimizers --plot optimizers.png\n  cnnkit explain backprop configs/lenet5_mnist5k.yaml\n"
               "  cnnkit explain iou --all\n  cnnkit explain nms --per-class\n"
               "  cnnkit explain text runs/sentiment \"an utterly charming film\"\n"
               "  cnnkit explain attention runs/se_digits digit.png --save attention.png\n"
               "\nrun 'cnnkit explain WHAT --help' for each one's options")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="explain_command", metavar="WHAT")
    sub.required = True

    for op, helptext in _WINDOW_HELP.items():
        extra = '--kernel "1 0 -1; 1 0 -1; 1 0 -1" ' if op == "conv" else "--size 3 "
        q = sub.add_parser(op, help=helptext, description=helptext + ".", formatter_class=fmt,
                           epilog=_WINDOW_EPILOG.format(op=op, extra=extra))
        q.add_argument("--input", help='the input matrix, e.g. "3 3 2; 0 0 1; 3 1 2"')
        if op == "conv":
            q.add_argument("--kernel", help='the kernel matrix, e.g. "1 0 -1; 1 0 -1; 1 0 -1"')
        else:
            q.add_argument("--size", type=int, help="the window size K (KxK, default 2)")
        q.add_argument("--stride", type=int, help="step between windows (conv default 1, pools default the size)")
        q.add_argument("--padding", help="int, 'valid' or 'same' (default 0)")
        q.add_argument("--example", help="'course': the course's worked example (5x5 input, 3x3 window, stride 1)")
        q.add_argument("--decimals", type=int, default=1,
                       help="decimals of the final matrix in text output (default 1, as the course)")
        q.add_argument("--save", metavar="FILE", help="draw the frames: FILE.png (a grid of panels) or FILE.gif")
        _add_format(q)
        q.set_defaults(explain_handler=_run_window, explain_op=op)

    q = sub.add_parser("conv1d", help="a 1-D convolution on a short series: the positions each output reads "
                                      "(causal, dilated), the products and the sum",
                       description="Walk a 1-D convolution over a short series, output by output: the input "
                                   "positions each output reads, the products and their sum, computed with the "
                                   "NumPy reference engine's conv1d.", formatter_class=fmt, epilog=_CONV1D_EPILOG)
    q.add_argument("--series", metavar="X1,X2,...", help="the series, e.g. 1,3,2,5,4,6 (default 1,3,2,5,4,6,9,8)")
    q.add_argument("--kernel", metavar="W1,W2,...", help="the kernel's weights, e.g. 1,0,-1 (the default)")
    q.add_argument("--stride", help="step between outputs (default 1)")
    q.add_argument("--dilation", help="spacing of the kernel's taps (default 1)")
    q.add_argument("--padding", help="valid (default), same, causal or an int")
    q.add_argument("--bias", help="added to every output (default 0)")
    _add_format(q)
    q.set_defaults(explain_handler=_run_conv1d)

    q = sub.add_parser("activation", help="an activation function value by value, with its derivative",
                       description="Apply one of the course's activation functions to a small matrix.",
                       formatter_class=fmt, epilog=_ACTIVATION_EPILOG)
    q.add_argument("name", metavar="NAME", help="sigmoid, tanh, relu, leaky_relu, elu or maxout")
    q.add_argument("--input", help='the input matrix, e.g. "-249 -91 -37; 250 -134 101"')
    q.add_argument("--example", help="'course': the course's ReLU example input")
    q.add_argument("--slope", type=float, default=0.1, help="leaky_relu's negative slope (default 0.1)")
    q.add_argument("--alpha", type=float, default=1.0, help="elu's alpha (default 1.0)")
    q.add_argument("--pieces", type=int, default=2, help="maxout's group size (default 2)")
    q.add_argument("--plot", metavar="FILE.png", help="draw the curve and its derivative on [-5, 5]")
    _add_format(q)
    q.set_defaults(explain_handler=_run_activation)

    q = sub.add_parser("shapes", help="layer by layer: output size, receptive field, stride and parameters",
                       description="Write out each layer's output-size, receptive-field and parameter arithmetic.",
                       formatter_class=fmt, epilog=_SHAPES_EPILOG)
    q.add_argument("target", metavar="MODEL_OR_CONFIG", help="a registered model name or a YAML config")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.input=[1,32,32]")
    q.add_argument("--input", metavar="C,H,W", help="input shape, e.g. 1,28,28")
    q.add_argument("--num-classes", type=int, help="classes for the last layer (default: the config's data, else 10)")
    q.add_argument("--signal", action="store_true",
                   help="a two-number input C,L is a real-valued series (time series: conv1d, lstm, gru), "
                        "not token ids")
    _add_format(q)
    q.set_defaults(explain_handler=_run_shapes)

    q = sub.add_parser("optimizers", help="the six update rules of the course raced on a 2-D function",
                       description="Run sgd, momentum, adagrad, adadelta, rmsprop and adam (the NumPy reference "
                                   "optimisers) from the same start on a 2-D function.",
                       formatter_class=fmt, epilog=_OPT_EPILOG)
    q.add_argument("--function", default="quadratic", help="quadratic (default) or rosenbrock")
    q.add_argument("--steps", type=int, help="steps per rule (default 100 quadratic, 2000 rosenbrock)")
    q.add_argument("--show", type=int, default=3, help="how many first steps to write out per rule (default 3)")
    q.add_argument("--plot", metavar="FILE.png", help="draw the trajectories over the contour plot")
    _add_format(q)
    q.set_defaults(explain_handler=_run_optimizers)

    q = sub.add_parser("backprop", help="one backward pass of a config's network, layer by layer",
                       description="Forward and backward through the config's network with the NumPy reference "
                                   "engine, explained layer by layer.", formatter_class=fmt, epilog=_BACKPROP_EPILOG)
    q.add_argument("config", metavar="CONFIG.yaml", help="a YAML config")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.batch_size=4")
    q.add_argument("--batch-size", type=int, default=8, help="examples in the batch (default 8)")
    _add_format(q)
    q.set_defaults(explain_handler=_run_backprop)

    q = sub.add_parser("iou", help="intersection over union of two boxes, and GIoU, DIoU, CIoU",
                       description="Write out the intersection over union of two boxes (x1 y1 x2 y2) step by "
                                   "step, and its variants GIoU, DIoU and CIoU.", formatter_class=fmt,
                       epilog=_IOU_EPILOG)
    q.add_argument("--a", metavar='"X1 Y1 X2 Y2"', help='box A, e.g. "1 1 6 5" (default: the worked example)')
    q.add_argument("--b", metavar='"X1 Y1 X2 Y2"', help='box B, e.g. "3 2 8 7" (default: the worked example)')
    q.add_argument("--variant", help="also show giou, diou or ciou (default: plain iou)")
    q.add_argument("--all", action="store_true", help="show IoU, GIoU, DIoU and CIoU")
    q.add_argument("--example", help="'course': the worked example (the default without --a/--b)")
    q.add_argument("--save", metavar="FILE.png", help="draw both boxes, the intersection and the enclosing box")
    _add_format(q)
    q.set_defaults(explain_handler=_run_iou)

    q = sub.add_parser("nms", help="non-maximum suppression round by round (--per-class: batched)",
                       description="Walk non-maximum suppression on scored boxes: sort by score, keep the best, "
                                   "suppress the boxes overlapping it, repeat.", formatter_class=fmt,
                       epilog=_NMS_EPILOG)
    q.add_argument("--boxes", metavar="FILE.json", help='a JSON list of {"box": [x1, y1, x2, y2], "score": s, '
                                                        '"class": c}')
    q.add_argument("--example", help="'course': the worked example, 6 boxes on 2 objects (the default)")
    q.add_argument("--iou", default="0.5", help="suppress when IoU > this, in [0, 1] (default 0.5)")
    q.add_argument("--conf", default="0.0", help="drop boxes scored below this first, in [0, 1] (default 0)")
    q.add_argument("--per-class", action="store_true", help="run NMS in each class apart (batched NMS)")
    q.add_argument("--save", metavar="FILE", help="draw the rounds: FILE.png (a grid of panels) or FILE.gif")
    _add_format(q)
    q.set_defaults(explain_handler=_run_nms)

    q = sub.add_parser("text", help="why a text CNN classified a sentence: the n-grams that won max-over-time "
                                    "pooling and how much each pushes the prediction",
                       description="Explain a text run's prediction for one sentence: for each filter width, the "
                                   "n-grams that won the max-over-time pooling and their push toward the "
                                   "predicted class (Kim's CNN), or the drop when each token is occluded "
                                   "(other text models).", formatter_class=fmt, epilog=_TEXT_EPILOG)
    q.add_argument("run", metavar="RUN", help="a text run folder or a cnnkit checkpoint of one")
    q.add_argument("sentence", metavar="SENTENCE", help='the text to explain, e.g. "an utterly charming film"')
    q.add_argument("--top", type=int, default=5, help="n-grams shown per width, tokens for occlusion "
                                                      "(default 5; 0: all)")
    q.add_argument("--method", default="auto", choices=("auto", "max-over-time", "occlusion"),
                   help="auto (default): max-over-time for Kim's CNN, occlusion for the other models")
    q.add_argument("--save", metavar="FILE", help="FILE.html (a page with the words highlighted) or FILE.png")
    _add_format(q)
    q.set_defaults(explain_handler=_run_text)

    q = sub.add_parser("attention", help="the channel weights and spatial maps each attention block (se, cbam, eca, "
                                         "nonlocal, attention_pool) applied to an image",
                       description="Run one image through a trained run's network with its attention blocks "
                                   "recording, and show each block's channel weights and spatial attention map.",
                       formatter_class=fmt, epilog=_ATTENTION_EPILOG)
    q.add_argument("run", metavar="RUN", help="an image run folder or a cnnkit checkpoint of one")
    q.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, ...)")
    q.add_argument("--top", type=int, default=5, help="channels listed per block, highest weights first (default 5; "
                                                      "0: all)")
    q.add_argument("--save", metavar="FILE.png", help="draw the spatial maps over the image and the channel weights")
    _add_format(q)
    q.set_defaults(explain_handler=_run_attention)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command (``cnnkit explain WHAT ...``)."""
    return args.explain_handler(args)


__all__ = ["add_parser", "print_json", "run"]
