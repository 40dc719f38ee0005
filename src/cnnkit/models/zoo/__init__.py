"""The model zoo: one family per module (as in timm).

Importing this package registers every family's builders in
:data:`cnnkit.models.registry.MODELS`. Each module holds the family's blocks,
then a private ``_create_...`` function, then thin public builders registered
by name. Every zoo model is a :class:`cnnkit.models.base.Classifier`: ``body``
maps an image to a pooled, flattened feature vector and ``head`` is the final
``nn.Linear``.
"""

from cnnkit.models.zoo import densenet, fastnet, inception, modern, resnet, se_resnet, vgg  # noqa: F401
