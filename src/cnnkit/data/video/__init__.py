"""Video: Moving MNIST clips generated offline from the bundled MNIST digits
(:mod:`~cnnkit.data.video.moving_mnist`: the generator, the classification rule, the copy-last-frame
baseline) and the two datasets (:mod:`~cnnkit.data.video.dataset`): ``moving_mnist`` (task ``frames``)
and ``moving_mnist_clips`` (task ``video``).

Importing :mod:`cnnkit.data` registers both datasets.

Example::

    from cnnkit.data.video import moving_mnist, moving_mnist_clips
    clips = moving_mnist(100, 20, size=64, digits=2, seed=0)        # uint8 (100, 20, 1, 64, 64)
    clips, labels = moving_mnist_clips(100, 10, seed=0)            # labels: the class of the moving digit
"""

from cnnkit.data.video.dataset import FrameClips, LabelledClips, digit_split
from cnnkit.data.video.moving_mnist import (MovingDigits, blank_mse, bounce, copy_last_mse, moving_mnist,
                                            moving_mnist_clips, render)

__all__ = ["FrameClips", "LabelledClips", "MovingDigits", "blank_mse", "bounce", "copy_last_mse", "digit_split",
           "moving_mnist", "moving_mnist_clips", "render"]
