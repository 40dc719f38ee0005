"""GoogLeNet (Szegedy et al., 2015) and Inception v3 (Szegedy et al., 2016), built by torchvision.

Both are built with ``aux_logits=False``, ``init_weights=True`` and
``transform_input=False`` (the input transform assumes ImageNet-normalised RGB).
Auxiliary classifiers are not offered: they only matter for the original
training recipes, need a loss that consumes them, and would make the model
return a tuple in training mode. Without them torchvision's networks return
plain logits in training mode as well, so every cnnkit model has one output.

The body is torchvision's network with ``fc`` replaced by ``nn.Identity``: it
ends with global average pooling, flatten and dropout; the head is the
``nn.Linear``. ``in_chans != 3`` replaces the first convolution.

Smallest inputs: torchvision's GoogLeNet runs from 15x15 up (checked
empirically; at 14 px its fourth max pool gets a 1x1 map and fails); it is
registered with the same 32 px floor as the other ImageNet-shaped networks.
Inception v3 runs from 75 px but is registered with 299 px as its smallest
input, the size it was designed for.
"""

from __future__ import annotations

import torchvision
from torch import nn

from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model


def _new_first_conv(old: nn.Conv2d, in_chans: int, std: float) -> nn.Conv2d:
    conv = nn.Conv2d(in_chans, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                     padding=old.padding, bias=old.bias is not None)
    nn.init.trunc_normal_(conv.weight, mean=0.0, std=std, a=-2, b=2)  # as torchvision initialises these nets
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _split(net: nn.Module) -> Classifier:
    head = net.fc
    net.fc = nn.Identity()
    return Classifier(net, head)


@register_model("googlenet", "GoogLeNet / Inception v1 (Szegedy et al., 2015), no auxiliary heads",
                default_input=(3, 224, 224), min_input=(3, 32, 32))
def googlenet(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, dropout: float = 0.2) -> Classifier:
    """GoogLeNet with batch norm as in torchvision; ``dropout`` before the classifier."""
    net = torchvision.models.googlenet(weights=None, num_classes=num_classes, aux_logits=False, init_weights=True,
                                       transform_input=False, dropout=dropout)
    if in_chans != 3:
        net.conv1.conv = _new_first_conv(net.conv1.conv, in_chans, std=0.01)
    return _split(net)


@register_model("inception_v3", "Inception v3 (Szegedy et al., 2016), no auxiliary head, 299 px inputs",
                default_input=(3, 299, 299), min_input=(3, 299, 299))
def inception_v3(num_classes: int = 1000, in_chans: int = 3, input_size: int = 299,
                 dropout: float = 0.5) -> Classifier:
    """Inception v3 as in torchvision; ``dropout`` before the classifier."""
    net = torchvision.models.inception_v3(weights=None, num_classes=num_classes, aux_logits=False,
                                          init_weights=True, transform_input=False, dropout=dropout)
    if in_chans != 3:
        net.Conv2d_1a_3x3.conv = _new_first_conv(net.Conv2d_1a_3x3.conv, in_chans, std=0.1)
    return _split(net)
