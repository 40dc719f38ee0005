"""Recurrent convolutional models: clips ``(N, T, C, H, W)`` and Liang & Hu's RCNN for images.

Registered with an input shape ``(T, C, H, W)`` (a clip of T frames): the builders are sized by one
frame (``in_chans`` = C, ``input_size`` = H = W) and take any T (see :mod:`.base`). The layers are
those of :mod:`cnnkit.nn.recurrent_conv`.

Frame prediction, ``task="frames"``, ``(N, T, C, H, W)`` in and the next K frames ``(N, K, C, H, W)``
in [0, 1] out (:mod:`.frames`):

* ``convlstm_frames``: Shi et al. 2015's ConvLSTM encoder-forecaster;
* ``convgru_frames``: the same with ConvGRU cells (Ballas et al. 2016).

Clip classification, ``task="video"``, logits ``(N, num_classes)`` out (:mod:`.classifiers`):

* ``cnn_lstm_video``: a per-frame CNN (shared weights) feeding an LSTM;
* ``convlstm_video``: a ConvLSTM over the clip, its last state pooled.

Image classification, ``task="classification"``, ``(N, C, H, W)`` in: ``rcnn`` (:mod:`.rcnn`), Liang &
Hu 2015's recurrent CNN, and with ``recurrent: false`` its feed-forward twin of equal parameter count.
"""

from cnnkit.models.video import classifiers, frames, rcnn  # noqa: F401  (registers them)
from cnnkit.models.video.base import ClipClassifier
from cnnkit.models.video.classifiers import CNNLSTMVideo, ConvLSTMVideo
from cnnkit.models.video.frames import EncoderForecaster

__all__ = ["CNNLSTMVideo", "ClipClassifier", "ConvLSTMVideo", "EncoderForecaster"]
