"""Per-layer summary: output shape, parameters, MACs, receptive field and cumulative stride.

Rows are the leaf modules in the order they first run (a module run twice shows
the output shape of its first call, the receptive field after its last). MACs are the
multiply-accumulates of convolution and dense layers, i.e. half of the FLOPs
that ``torch.utils.flop_counter`` counts for them.

:func:`walk_model` is the one walk over a model that ``cnnkit summary`` and
``cnnkit explain shapes`` share: every call of a leaf module with its input and
output shapes and its receptive field and cumulative stride ("jump", per axis,
arithmetic in :mod:`cnnkit.geometry`). The field follows the data flow graph
traced by ``torch.fx`` (the largest over parallel branches); a network fx cannot
trace falls back to execution order, along its main path. Flatten keeps the field
of the map it flattens; a global pool is a window over the whole map; a dense layer
on a flattened (H, W) map sees all its positions (rf + (H - 1) * jump), and on a
vector keeps its field. The result equals the input region that gets a non-zero
gradient from one output unit (tested). Upsampling (a transposed convolution, an
``nn.Upsample``) makes the cumulative stride a fraction, which the integer arithmetic
does not follow: from there on (and wherever such a branch joins, as in U-Net's
concatenations) the field and stride are unknown and show as ``-``.

Channel gates. Squeeze-and-excitation (EfficientNet, MobileNetV3, RegNetY) multiplies a
feature map by a per-channel vector computed from a global pool of it. Through the gate
every output unit depends on the whole image, but that is global context, not a wider
window: an operand broadcast over every spatial position of the result (its H and W
are 1 where the result's are not) leaves the field and stride of the map it scales or
shifts. The table therefore shows the field of the convolution path, and this is the one
place where it is smaller than the gradient footprint (which, past a gate, is the image).

Example::

    s = summarize(get_model("lenet5"), (1, 28, 28))
    s.total_params, s.total_macs      # 44426, 281640
    print(s.to_text())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.geometry import ReceptiveField, adaptive_pool_window, pair
from cnnkit.nn.layers import GlobalAvgPool, GlobalMaxPool, L2Pool2d

_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, L2Pool2d, nn.Conv1d)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, GlobalAvgPool, GlobalMaxPool)
_ADAPTIVE_FUNCTIONS = ("adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax")
_UPSAMPLING = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Upsample)
_UPSAMPLING_FUNCTIONS = ("interpolate", "upsample", "conv_transpose1d", "conv_transpose2d")
_MAC_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm")


# --------------------------------------------------------------------------- the walk

@dataclass
class LayerCall:
    """One call of a leaf module: shapes without the batch axis, receptive fields before and after."""

    name: str
    module: nn.Module
    input_shape: list[int]
    output_shape: list[int]
    first_call: bool
    field_in: ReceptiveField | None   # of its input; None when the input is not a feature map
    field: ReceptiveField | None      # after it


@dataclass
class ModelWalk:
    calls: list[LayerCall]
    output_shape: list[int]
    rf_method: str                    # "graph" (torch.fx) or "execution order"
    flops: dict[str, dict[Any, int]] = field(default_factory=dict)   # FlopCounterMode's counts by module


def _shape(t: Any) -> list[int]:
    if isinstance(t, torch.Tensor):
        return list(t.shape[1:])
    if isinstance(t, (tuple, list)) and t:
        return _shape(t[0])
    return []


def _window(m: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, dilation) pairs of a conv or pooling module (a 1-D conv: the same on both axes)."""
    if isinstance(m, nn.Conv1d):
        return (m.kernel_size[0],) * 2, (m.stride[0],) * 2, (m.dilation[0],) * 2
    stride = m.stride if m.stride is not None else m.kernel_size
    return pair(m.kernel_size), pair(stride), pair(getattr(m, "dilation", 1))


def _next_field(op: nn.Module | str | None, field_in: ReceptiveField | None, in_shape: list[int],
                out_shape: list[int]) -> ReceptiveField | None:
    """The receptive field after ``op`` (a module, or a function's name) on an input with ``field_in``."""
    if field_in is None or isinstance(op, _UPSAMPLING) or op in _UPSAMPLING_FUNCTIONS:
        return None   # unknown: upsampling makes the stride a fraction
    if isinstance(op, nn.Linear) or op == "linear":
        return field_in.dense()
    if (isinstance(op, nn.Flatten) or op == "flatten") and len(in_shape) == 3:
        return field_in.flattened(in_shape[1:])
    if isinstance(op, _WINDOWED):
        return field_in.step(*_window(op))
    if (isinstance(op, _ADAPTIVE) or op in _ADAPTIVE_FUNCTIONS) and len(in_shape) == 3:
        out_hw = out_shape[-2:] if len(out_shape) == 3 else [1, 1]
        (kh, sh), (kw, sw) = (adaptive_pool_window(in_shape[1 + a], out_hw[a] or in_shape[1 + a]) for a in range(2))
        return field_in.step((kh, kw), (sh, sw))
    return field_in


def walk_model(model: nn.Module, input_shape, count_flops: bool = False) -> ModelWalk:
    """Run one image of ``input_shape`` (C, H, W) through ``model`` and record every leaf module call."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if len(input_shape) == 2 and any(isinstance(m, nn.Embedding) for m in model.modules()):
        # text (V, L): one sequence of L token ids (an ordinary word's, not padding)
        x = torch.full((1, int(input_shape[1])), min(2, int(input_shape[0]) - 1), dtype=torch.long, device=device)
    else:
        x = torch.zeros(1, *input_shape, device=device)
    names = {m: n for n, m in model.named_modules()}
    events: list[tuple[str, nn.Module, list[int], list[int]]] = []

    def hook(m, inp, out):
        events.append((names[m], m, _shape(inp), _shape(out)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    flops: dict[str, dict[Any, int]] = {}
    try:
        with torch.no_grad():
            if count_flops:
                with FlopCounterMode(display=False) as counter:
                    out = model(x)
                flops = counter.get_flop_counts()
            else:
                out = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    calls, seen = [], set()
    for name, m, in_shape, out_shape in events:
        calls.append(LayerCall(name, m, in_shape, out_shape, m not in seen, None, None))
        seen.add(m)
    method = "graph"
    graph = _fields_graph(model, input_shape)
    if graph is not None:
        used: dict[str, int] = {}
        for c in calls:
            per_call = graph.get(c.name, [])
            i = used.get(c.name, 0)
            used[c.name] = i + 1
            if per_call:
                c.field_in, c.field = per_call[min(i, len(per_call) - 1)]
    else:
        method = "execution order"
        _fields_in_order(calls, input_shape)
    for c in calls:  # a layer fed by no feature map (a head on a vector of its own) has none
        if c.field is None:
            c.field_in = None
    return ModelWalk(calls, _shape(out), method, flops)


def _fields_graph(model: nn.Module, input_shape) -> dict[str, list[tuple]] | None:
    """(field of the input, field after) of each call_module node of the fx graph, by module name."""
    try:
        from torch.fx.passes.shape_prop import ShapeProp

        class _Tracer(torch.fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return not list(m.children()) or super().is_leaf_module(m, qualname)

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was = model.training
        model.eval()  # the graph of the walk's own (eval) forward: no stochastic depth or dropout in it
        try:
            graph = _Tracer().trace(model)
            gm = torch.fx.GraphModule(model, graph)
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device))
        finally:
            model.train(was)
    except Exception:
        return None

    def shape_of(node) -> list[int]:
        meta = node.meta.get("tensor_meta")
        return list(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else []

    state: dict[Any, ReceptiveField | None] = {}
    result: dict[str, list[tuple]] = {}
    modules = dict(model.named_modules())
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            state[node] = ReceptiveField()
            continue
        if node.op in ("get_attr", "output"):
            continue
        inputs = [a for a in node.all_input_nodes if a in state]
        if not inputs:  # built from constants only
            continue
        if len(inputs) > 1:  # a channel gate's vector leaves the field of the map it scales
            local = [a for a in inputs if not _broadcast_over_space(shape_of(a), shape_of(node))]
            inputs = local or inputs
        ins = [state[a] for a in inputs]
        field_in = None
        if all(f is not None for f in ins):   # a branch of unknown field makes the join unknown too
            for f in ins:
                field_in = f if field_in is None else field_in.merge(f)
        if node.op == "call_module":
            op = modules.get(node.target)
        else:
            op = getattr(node.target, "__name__", str(node.target))
        in_shape = shape_of(node.all_input_nodes[0])
        state[node] = _next_field(op, field_in, in_shape, shape_of(node))
        if node.op == "call_module":
            result.setdefault(node.target, []).append((field_in, state[node]))
    return result


def _broadcast_over_space(shape: list[int], out_shape: list[int]) -> bool:
    """Whether an operand of ``shape`` is spread over every position of a map of ``out_shape`` (both without
    the batch axis): a per-channel (C, 1, 1) vector such as a squeeze-and-excitation gate."""
    if len(out_shape) < 2 or len(shape) != len(out_shape):
        return False
    return all(v == 1 for v in shape[1:]) and any(v > 1 for v in out_shape[1:])


def _fields_in_order(calls: list[LayerCall], input_shape) -> None:
    """Fallback without a graph: each call continues from the largest field seen so far on a
    feature map of its input's shape (or spatial size), else from the last one."""
    states: dict[tuple, ReceptiveField] = {tuple(input_shape): ReceptiveField()}
    last = ReceptiveField()
    for c in calls:
        key = tuple(c.input_shape)
        field_in = states.get(key)
        if field_in is None:
            same_size = [v for sh, v in states.items() if len(sh) == 3 and sh[1:] == key[1:]]
            field_in = max(same_size, key=lambda v: sum(v.rf)) if same_size else last
        c.field_in, c.field = field_in, _next_field(c.module, field_in, c.input_shape, c.output_shape)
        if c.field is not None:
            out = tuple(c.output_shape)
            states[out] = states[out].merge(c.field) if out in states else c.field
            last = c.field


# --------------------------------------------------------------------------- the summary

@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int
    receptive_field: int | list[int] | None   # [h, w] when the axes differ
    stride: int | list[int] | None


@dataclass
class Summary:
    input_shape: list[int]
    layers: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    output_shape: list[int] = field(default_factory=list)
    rf_method: str = "graph"
    tokens: bool = False  # the input is token ids (a text model): input_shape is (vocabulary, length)

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": self.input_shape, "output_shape": self.output_shape,
                "layers": [asdict(r) for r in self.layers], "total_params": self.total_params,
                "trainable_params": self.trainable_params, "total_macs": self.total_macs,
                "receptive_field_method": self.rf_method}

    def to_text(self) -> str:
        head = ("layer", "type", "output", "params", "MACs", "RF", "stride")
        rows = [head] + [(r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
                          _cell(r.receptive_field), _cell(r.stride)) for r in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        right = {3, 4, 5, 6}

        def fmt(row):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

        rule = "-" * len(fmt(head))
        text = len(self.input_shape) == 2 and self.tokens  # (V, L): token ids
        shown = (f"input {self.input_shape[1]} token ids (vocabulary {self.input_shape[0]:,})" if text
                 else f"input {'x'.join(map(str, self.input_shape))}")
        lines = [shown, fmt(head), rule] + [fmt(r) for r in rows[1:]]
        lines += [rule, f"total params: {self.total_params:,} ({self.trainable_params:,} trainable)",
                  f"total MACs: {self.total_macs:,} per {'text' if text else 'series' if len(self.input_shape) == 2 else 'image'}", f"output: {'x'.join(map(str, self.output_shape))}"]
        if self.rf_method != "graph":
            lines.append("receptive fields follow execution order (main path): the graph could not be traced")
        return "\n".join(lines)


def _cell(v: int | list[int] | None) -> str:
    return "-" if v is None else "x".join(map(str, v)) if isinstance(v, list) else str(v)


def summarize(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> Summary:
    """Run one image of ``input_shape`` (C, H, W) through ``model`` and describe every layer."""
    walk = walk_model(model, input_shape, count_flops=True)
    root = type(model).__name__
    s = Summary(list(input_shape), rf_method=walk.rf_method, output_shape=walk.output_shape,
                tokens=len(input_shape) == 2 and any(isinstance(m, nn.Embedding) for m in model.modules()))
    last = {c.name: c for c in walk.calls}  # a module run more than once: the field after its last call
    for c in walk.calls:
        if not c.first_call:
            continue
        counts = walk.flops.get(f"{root}.{c.name}", {})
        macs = sum(v for k, v in counts.items() if str(k).split(".")[-1].split("_")[0] in _MAC_OPS) // 2
        params = sum(p.numel() for p in c.module.parameters(recurse=False))
        f = last[c.name].field
        rf, jump = (None, None) if f is None else (f.value("rf"), f.value("jump"))
        s.layers.append(LayerRow(c.name, type(c.module).__name__, c.output_shape, params, macs, rf, jump))
    s.total_params = sum(p.numel() for p in model.parameters())
    s.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s.total_macs = sum(r.macs for r in s.layers)
    return s


__all__ = ["LayerCall", "LayerRow", "ModelWalk", "Summary", "summarize", "walk_model"]
