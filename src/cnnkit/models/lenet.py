"""Two small digit networks.

``lenet5``: LeCun et al. (1998)'s LeNet-5 with ReLU and max pooling: two 5x5 valid
convolutions of n1 = 6 and n2 = 16 channels, each followed by 2x2 max pooling, then
dense layers of 120, 84 and the classes.
28x28x1 -> 6x24x24 -> 6x12x12 -> 16x8x8 -> 16x4x4 -> 120 -> 84 -> 10:
44,426 parameters and 281,640 multiply-accumulates.

``lenet_course``: the network of the course's figure ("Vue d'ensemble de la structure
d'un CNN"): Conv_1 (5x5, valid, n1 channels) -> max-pool 2x2 -> Conv_2 (5x5, valid,
n2 channels) -> max-pool 2x2 -> fc_3 (fully connected, ReLU) -> fc_4 (the classes):
two dense layers, where LeNet-5 has three. The figure leaves n1, n2 and fc_3's width
open; the defaults are 6, 16 and 128.
"""

from __future__ import annotations

from cnnkit.models.registry import register_model
from cnnkit.models.spec import DeclarativeNet, build_torch
from cnnkit.spec import parse_layers


def lenet5_layers(n1: int = 6, n2: int = 16, activation: str = "relu") -> list:
    """LeNet-5 as a declarative layer list (the demo recipe spells the same)."""
    return [
        {"conv": {"out": n1, "kernel": 5, "padding": "valid"}}, activation, {"maxpool": 2},
        {"conv": {"out": n2, "kernel": 5, "padding": "valid"}}, activation, {"maxpool": 2},
        "flatten",
        {"dense": 120}, activation,
        {"dense": 84}, activation,
        {"dense": "num_classes"},
    ]


def lenet_course_layers(n1: int = 6, n2: int = 16, n3: int = 128, activation: str = "relu") -> list:
    """The course figure's network as a declarative layer list: Conv_1, pool, Conv_2, pool, fc_3, fc_4."""
    return [
        {"conv": {"out": n1, "kernel": 5, "padding": "valid"}}, activation, {"maxpool": 2},
        {"conv": {"out": n2, "kernel": 5, "padding": "valid"}}, activation, {"maxpool": 2},
        "flatten",
        {"dense": n3}, activation,          # fc_3
        {"dense": "num_classes"},           # fc_4
    ]


LAYER_LISTS = {"lenet5": lenet5_layers, "lenet_course": lenet_course_layers}
"""The registered networks that are plain layer lists (the glass-box engine runs them by name)."""


@register_model("lenet_course", "the CNN of the course's figure: Conv_1 5x5 (n1), pool, Conv_2 5x5 (n2), pool, "
                "fc_3 (n3, ReLU), fc_4; 28x28 input", default_input=(1, 28, 28), min_input=(1, 28, 28))
def lenet_course(num_classes: int = 10, in_chans: int = 1, input_size: int = 28, n1: int = 6, n2: int = 16,
                 n3: int = 128, activation: str = "relu") -> DeclarativeNet:
    return build_torch(parse_layers(lenet_course_layers(n1, n2, n3, activation)), (in_chans, input_size, input_size),
                       num_classes)


@register_model("lenet5", "LeCun et al. (1998)'s LeNet-5 with ReLU and max pooling: n1=6, n2=16, dense 120-84; "
                "28x28 input",
                default_input=(1, 28, 28), min_input=(1, 28, 28))
def lenet5(num_classes: int = 10, in_chans: int = 1, input_size: int = 28, n1: int = 6, n2: int = 16,
           activation: str = "relu") -> DeclarativeNet:
    return build_torch(parse_layers(lenet5_layers(n1, n2, activation)), (in_chans, input_size, input_size), num_classes)
