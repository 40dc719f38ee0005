"""DenseNet (Huang et al., 2017), built by torchvision.

For inputs under 64 px (or with ``cifar_stem=True``) the 7x7 stride-2 stem
convolution and its 3x3 max pool are replaced by a 3x3 stride-1 convolution and
no pooling, so a 32x32 image leaves the last dense block at 4x4. The body is
torchvision's network with ``classifier`` replaced by ``nn.Identity`` (it ends
with ReLU, global average pooling and flatten); the head is the ``nn.Linear``.
DenseNet-121 with 1000 classes at 224 px has 7,978,856 parameters.
"""

from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model


def _create_densenet(builder: Callable[..., nn.Module], *, num_classes: int, in_chans: int, input_size: int,
                     cifar_stem: bool | None, drop_rate: float, memory_efficient: bool) -> Classifier:
    net = builder(weights=None, num_classes=num_classes, drop_rate=drop_rate, memory_efficient=memory_efficient)
    stem = net.features
    small = input_size < 64 if cifar_stem is None else cifar_stem
    if small:
        stem.conv0 = nn.Conv2d(in_chans, stem.conv0.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        stem.pool0 = nn.Identity()
    elif in_chans != 3:
        stem.conv0 = nn.Conv2d(in_chans, stem.conv0.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    if small or in_chans != 3:
        nn.init.kaiming_normal_(stem.conv0.weight)  # torchvision's DenseNet initialisation
    head = net.classifier
    net.classifier = nn.Identity()
    return Classifier(net, head)


@register_model("densenet121", "DenseNet-121 (Huang et al., 2017); CIFAR stem for inputs under 64 px",
                default_input=(3, 224, 224), min_input=(3, 32, 32))
def densenet121(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
                drop_rate: float = 0.0, memory_efficient: bool = False) -> Classifier:
    """DenseNet-121 (growth 32, blocks 6/12/24/16); ``drop_rate`` after each dense layer, ``memory_efficient``
    trades compute for memory with checkpointing; ``cifar_stem`` as for the ResNets."""
    return _create_densenet(torchvision.models.densenet121, num_classes=num_classes, in_chans=in_chans,
                            input_size=input_size, cifar_stem=cifar_stem, drop_rate=drop_rate,
                            memory_efficient=memory_efficient)
