"""Per-layer summary: output shape, parameters, MACs, receptive field and cumulative stride.

Rows are the leaf modules in the order they first run. MACs are the
multiply-accumulates of convolution and dense layers, i.e. half of the FLOPs
that ``torch.utils.flop_counter`` counts for them. The receptive field and
cumulative stride ("jump") follow the data flow graph traced by ``torch.fx``
(the largest over parallel branches); a network fx cannot trace falls back to
execution order, along its main path.

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

from cnnkit.nn.layers import GlobalAvgPool, GlobalMaxPool, L2Pool2d, pair

_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, L2Pool2d, nn.Conv1d)
_GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, GlobalAvgPool, GlobalMaxPool, nn.Flatten)
_MAC_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm")


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int
    receptive_field: int | None
    stride: int | None


@dataclass
class Summary:
    input_shape: list[int]
    layers: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    output_shape: list[int] = field(default_factory=list)
    rf_method: str = "graph"

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": self.input_shape, "output_shape": self.output_shape,
                "layers": [asdict(r) for r in self.layers], "total_params": self.total_params,
                "trainable_params": self.trainable_params, "total_macs": self.total_macs,
                "receptive_field_method": self.rf_method}

    def to_text(self) -> str:
        head = ("layer", "type", "output", "params", "MACs", "RF", "stride")
        rows = [head] + [(r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
                          "-" if r.receptive_field is None else str(r.receptive_field),
                          "-" if r.stride is None else str(r.stride)) for r in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        right = {3, 4, 5, 6}

        def fmt(row):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

        rule = "-" * len(fmt(head))
        lines = [f"input {'x'.join(map(str, self.input_shape))}", fmt(head), rule] + [fmt(r) for r in rows[1:]]
        lines += [rule, f"total params: {self.total_params:,} ({self.trainable_params:,} trainable)",
                  f"total MACs: {self.total_macs:,} per image", f"output: {'x'.join(map(str, self.output_shape))}"]
        if self.rf_method != "graph":
            lines.append("receptive fields follow execution order (main path): the graph could not be traced")
        return "\n".join(lines)


def _shape(t: Any) -> list[int]:
    if isinstance(t, torch.Tensor):
        return list(t.shape[1:])
    if isinstance(t, (tuple, list)) and t:
        return _shape(t[0])
    return []


def _kernel_stride_dilation(m: nn.Module) -> tuple[int, int, int]:
    k = pair(m.kernel_size)[0] if not isinstance(m, nn.Conv1d) else m.kernel_size[0]
    s = m.stride if m.stride is not None else m.kernel_size
    s = pair(s)[0] if not isinstance(m, nn.Conv1d) else s[0]
    d = getattr(m, "dilation", 1)
    d = pair(d)[0] if not isinstance(m, nn.Conv1d) else d[0]
    return k, s, d


def summarize(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> Summary:
    """Run one image of ``input_shape`` (C, H, W) through ``model`` and describe every layer."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *input_shape, device=device)
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    outputs: dict[nn.Module, list[int]] = {}

    def hook(m, inp, out):
        if m not in outputs:
            order.append(m)
            outputs[m] = _shape(out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    rf = _receptive_fields_graph(model, input_shape)
    method = "graph"
    if rf is None:
        rf = _receptive_fields_order(order, names, outputs, input_shape)
        method = "execution order"

    s = Summary(list(input_shape), rf_method=method, output_shape=_shape(out))
    for m in order:
        name = names[m]
        counts = flops.get(f"{root}.{name}", {})
        macs = sum(v for k, v in counts.items() if str(k).split(".")[-1].split("_")[0] in _MAC_OPS) // 2
        params = sum(p.numel() for p in m.parameters(recurse=False))
        r, j = rf.get(name, (None, None))
        s.layers.append(LayerRow(name, type(m).__name__, outputs[m], params, macs, r, j))
    s.total_params = sum(p.numel() for p in model.parameters())
    s.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s.total_macs = sum(r.macs for r in s.layers)
    return s


def _receptive_fields_graph(model: nn.Module, input_shape) -> dict[str, tuple[int, int]] | None:
    """(receptive field, cumulative stride) after each module, propagated over the fx graph."""
    try:
        from torch.fx import symbolic_trace
        from torch.fx.passes.shape_prop import ShapeProp

        class _Tracer(torch.fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return not list(m.children()) or super().is_leaf_module(m, qualname)

        graph = _Tracer().trace(model)
        gm = torch.fx.GraphModule(model, graph)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was = model.training
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device))
        model.train(was)
    except Exception:
        return None
    del symbolic_trace
    state: dict[Any, tuple[int, int]] = {}
    result: dict[str, tuple[int, int]] = {}
    modules = dict(model.named_modules())
    for node in gm.graph.nodes:
        ins = [state[a] for a in node.all_input_nodes if a in state]
        rf_in, jump_in = (max(r for r, _ in ins), max(j for _, j in ins)) if ins else (1, 1)
        in_shape = None
        if node.all_input_nodes:
            meta = node.all_input_nodes[0].meta.get("tensor_meta")
            in_shape = list(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        rf, jump = rf_in, jump_in
        target = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(target, _WINDOWED):
            k, st, d = _kernel_stride_dilation(target)
            rf, jump = rf_in + (k - 1) * d * jump_in, jump_in * st
        elif (isinstance(target, _GLOBAL) or (node.op in ("call_function", "call_method")
              and getattr(node.target, "__name__", str(node.target)) in ("flatten", "adaptive_avg_pool2d", "mean"))):
            if in_shape is not None and len(in_shape) == 4:
                rf = rf_in + (in_shape[-2] - 1) * jump_in
        state[node] = (rf, jump)
        if node.op == "call_module":
            result[node.target] = (rf, jump)
    return result


def _receptive_fields_order(order, names, outputs, input_shape) -> dict[str, tuple[int, int]]:
    rf, jump, size = 1, 1, input_shape[-1]
    result = {}
    for m in order:
        name = names[m]
        shortcut = "downsample" in name or "shortcut" in name
        if isinstance(m, _WINDOWED) and not shortcut:
            k, s, d = _kernel_stride_dilation(m)
            rf, jump = rf + (k - 1) * d * jump, jump * s
        elif isinstance(m, _GLOBAL) and len(outputs[m]) != 3:
            rf = rf + (size - 1) * jump
        if len(outputs[m]) == 3:
            size = outputs[m][-1]
        result[name] = (rf, jump)
    return result
