"""``cnnkit explain``: the course's arithmetic written out, computed with the NumPy reference engine.

Modules (data only, no printing): :mod:`~cnnkit.explain.ops` (sliding windows: conv and pooling),
:mod:`~cnnkit.explain.activations`, :mod:`~cnnkit.explain.shapes` (output size, receptive field,
parameters), :mod:`~cnnkit.explain.optimizers` (the six update rules on a 2-D function),
:mod:`~cnnkit.explain.detection` (IoU and its variants, NMS round by round), :mod:`~cnnkit.explain.text`
(why a text CNN classified a sentence: the n-grams that won max-over-time pooling, or occlusion);
:mod:`~cnnkit.explain.plots` draws, :mod:`cnnkit.cli.explain` wires ``cnnkit explain``.
"""
