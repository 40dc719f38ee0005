"""Any cnnkit classifier as a detector's backbone: its feature maps at several strides.

A detector needs the trunk of a classifier cut before its global pooling, and the outputs of
its last few stages (fine maps locate small objects, coarse maps see large ones). Rather than
asking every network to declare its stages, the classifier is traced once with ``torch.fx``
(torchvision's ``create_feature_extractor``, which also drops everything after the last map
used: pooling, flatten, head):

1. every operation of the traced graph gets the shape of its output on a probe image;
2. operations are read in order until the first one that leaves the image plane (a flatten, a
   global or adaptive pooling);
3. each spatial size met on the way is a level; its output is the last operation at that size
   before the first one at a smaller size (the end of a stage), and its stride is
   ``input side / map side``;
4. the last ``levels`` levels with stride >= ``min_stride`` are returned, finest first.

So a zoo ResNet gives the ends of ``layer2``, ``layer3``, ``layer4`` (strides 8, 16, 32 with an
ImageNet stem), and a layer list gives the last layer before each of its pooling steps.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from cnnkit.errors import UserError

_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_GLOBAL_FUNCTIONS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
                     "flatten", "mean", "amax", "max", "avg_pool2d_global"}
_PROBE_BATCH = 2


class FeatureLevels(nn.Module):
    """``x -> OrderedDict("0": finest map, "1": ..., ...)``: a classifier's stage outputs.

    ``channels`` and ``strides`` describe the levels, finest first.
    """

    def __init__(self, classifier: nn.Module, input_shape: tuple[int, int, int], levels: int = 3,
                 min_stride: int = 4) -> None:
        super().__init__()
        nodes = find_levels(classifier, input_shape)
        usable = [n for n in nodes if n[2] >= min_stride] or nodes[-1:]
        chosen = usable[-levels:]
        if not chosen:
            raise UserError(f"backbone {type(classifier).__name__} has no feature map before its global "
                            f"pooling: a detector needs a convolutional trunk")
        from torchvision.models.feature_extraction import create_feature_extractor

        was = classifier.training
        self.body = create_feature_extractor(classifier.eval(), {name: str(i) for i, (name, _, _) in enumerate(chosen)})
        self.body.train(was)
        self.names = [name for name, _, _ in chosen]
        self.channels = [c for _, c, _ in chosen]
        self.strides = [s for _, _, s in chosen]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out = self.body(x)
        return OrderedDict((str(i), out[str(i)]) for i in range(len(self.names)))


def find_levels(classifier: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[str, int, int]]:
    """``[(graph node name, channels, stride)]`` of each spatial level of ``classifier``'s trunk, finest first.

    A level ends where the next one begins: its output is the last operation at its size before the
    first operation at a smaller size (so the end of ``layer1``, not a branch inside ``layer2``'s
    first block that still works at the old size).
    """
    from torch.fx.passes.shape_prop import ShapeProp
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer()
    c, h, w = input_shape
    was = classifier.training
    classifier.eval()
    try:
        graph = tracer.trace(classifier)
        root = tracer.root

        class Probe(ShapeProp):
            def run_node(self, n):  # shapes up to the end of the trunk; the head may not fit this input
                if _ends_trunk(n, root):
                    raise _TrunkEnd
                return super().run_node(n)

        with torch.no_grad():
            try:
                Probe(torch.fx.GraphModule(root, graph)).propagate(torch.zeros(_PROBE_BATCH, c, h, w))
            except _TrunkEnd:
                pass
    except UserError:
        raise
    except Exception as e:  # dynamic control flow that torch.fx cannot follow, or an input too small
        raise UserError(f"cannot use {type(classifier).__name__} as a detection backbone at {h}x{w}: tracing "
                        f"it with torch.fx failed ({type(e).__name__}: {str(e).splitlines()[0]}); pick a zoo "
                        f"model or a layer list") from None
    finally:
        classifier.train(was)
    # Group the operations of the trunk by output size, in order: a group runs until the first
    # operation at a smaller size (operations at the old size after it, branches of the next block,
    # stay in the group).
    groups: list[list[Any]] = []  # (size, nodes at that size, boundary node)
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        if _ends_trunk(node, root):
            break
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)
        if shape is None or len(shape) != 4 or shape[0] != _PROBE_BATCH:
            continue
        size = (int(shape[2]), int(shape[3]))
        if not groups or size[0] < groups[-1][0][0]:  # a new, smaller size: the next level begins
            if groups:
                groups[-1][2] = node
            groups.append([size, [node], None])
            continue
        for g in reversed(groups):
            if g[0] == size:
                g[1].append(node)
                break
    levels = []
    for size, nodes, boundary in groups:
        # The level's output: the last node at this size that every later one and the next level
        # depend on (the end of the stage, not a branch of the next block).
        out = _stage_end(nodes, boundary)
        shape = out.meta["tensor_meta"].shape
        levels.append((tracer.node_to_qualname[out], int(shape[1]), max(1, round(h / size[0]))))
    return levels


def _stage_end(nodes: list, boundary) -> Any:
    for i in range(len(nodes) - 1, -1, -1):
        cand = nodes[i]
        if all(_depends_on(n, cand) for n in nodes[i + 1:] + ([boundary] if boundary is not None else [])):
            return cand
    return nodes[-1]


def _depends_on(node, ancestor) -> bool:
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n is ancestor:
            return True
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return False


class _TrunkEnd(Exception):
    pass


def _ends_trunk(node, root: nn.Module) -> bool:
    """Whether ``node`` leaves the image plane: global/adaptive pooling, flatten, or the graph's output."""
    if node.op == "output":
        return True
    if node.op == "call_module":
        return isinstance(root.get_submodule(node.target), _GLOBAL_POOLS)
    return node.op in ("call_function", "call_method") and _name(node.target) in _GLOBAL_FUNCTIONS


def _name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", "")
