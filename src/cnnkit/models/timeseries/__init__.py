"""Time-series models: a float series ``(N, C, L)`` in (C channels, the mask channel of zero-padded
series included; L steps).

Registered with an input shape ``(C, L)``: C is the builder's ``in_chans``, L its ``input_size``.

Classifiers, ``task="timeseries"``, logits ``(N, num_classes)`` out (see :mod:`.base`):

* ``fcn1d`` (:mod:`.fcn`) and ``resnet1d`` (:mod:`.resnet`): Wang, Yan & Oates 2017;
* ``inception_time`` (:mod:`.inception`): Ismail Fawaz et al. 2020 (``ensemble: 5`` for the ensemble);
* ``lstm_fcn`` (:mod:`.lstm_fcn`): Karim et al. 2018 (with the dimension shuffle it takes exactly L steps);
* ``cnn_lstm`` (:mod:`.cnn_lstm`): convolutions and max pooling, then an LSTM;
* ``tcn_classifier`` (:mod:`.tcn`): Bai, Kolter & Koltun 2018's TCN with a classification head.

Forecaster, ``task="forecast"``: ``tcn`` (:mod:`.tcn`), a window ``(N, C, lookback)`` in and, with
option ``horizon`` set, ``(N, targets, horizon)`` out. (The registry gives each model one task, hence
the two names of the TCN; the same class serves both.)

Every model has ``variable_length = False``: none masks its padding, so the task brings each batch
to one length; all but ``lstm_fcn`` (shuffle on) accept lengths other than ``input_size``.
"""

from cnnkit.models.timeseries import cnn_lstm, fcn, inception, lstm_fcn, resnet, tcn  # noqa: F401  (registers them)
from cnnkit.models.timeseries.base import SeriesClassifier
from cnnkit.models.timeseries.cnn_lstm import CNNLSTM
from cnnkit.models.timeseries.fcn import FCN1d
from cnnkit.models.timeseries.inception import InceptionModule, InceptionTime, InceptionTimeEnsemble
from cnnkit.models.timeseries.lstm_fcn import LSTMFCN
from cnnkit.models.timeseries.resnet import ResNet1d
from cnnkit.models.timeseries.tcn import TCN, CausalConv1d, receptive_field

__all__ = ["CNNLSTM", "CausalConv1d", "FCN1d", "InceptionModule", "InceptionTime", "InceptionTimeEnsemble", "LSTMFCN",
           "ResNet1d", "SeriesClassifier", "TCN", "receptive_field"]
