"""LeNet-5 (LeCun et al., 1998) as drawn in the course: two 5x5 valid convolutions
with n1 = 6 and n2 = 16 channels, each followed by ReLU and 2x2 max pooling, then
dense layers of 120, 84 and the classes.

28x28x1 -> 6x24x24 -> 6x12x12 -> 16x8x8 -> 16x4x4 -> 120 -> 84 -> 10:
44,426 parameters and 281,640 multiply-accumulates.
"""

from __future__ import annotations

from cnnkit.models.registry import register_model
from cnnkit.models.spec import DeclarativeNet, build_torch
from cnnkit.spec import parse_layers


def lenet5_layers(n1: int = 6, n2: int = 16, activation: str = "relu") -> list:
    """The course's LeNet-5 as a declarative layer list (the demo recipe spells the same)."""
    return [
        {"conv": {"out": n1, "kernel": 5, "padding": "valid"}}, activation, {"maxpool": 2},
        {"conv": {"out": n2, "kernel": 5, "padding": "valid"}}, activation, {"maxpool": 2},
        "flatten",
        {"dense": 120}, activation,
        {"dense": 84}, activation,
        {"dense": "num_classes"},
    ]


@register_model("lenet5", "LeCun's LeNet-5 as in the course's figure (n1=6, n2=16), 28x28 input",
                default_input=(1, 28, 28), min_input=(1, 28, 28))
def lenet5(num_classes: int = 10, in_chans: int = 1, input_size: int = 28, n1: int = 6, n2: int = 16,
           activation: str = "relu") -> DeclarativeNet:
    return build_torch(parse_layers(lenet5_layers(n1, n2, activation)), (in_chans, input_size, input_size), num_classes)
