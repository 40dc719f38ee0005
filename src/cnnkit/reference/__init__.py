"""The NumPy "glass box" reference engine: every op as a forward and a backward.

Forward functions return ``(output, cache)``; ``*_backward(dy, cache)`` returns the
input gradient(s). Pure NumPy, float32 or float64 (the input's dtype is kept); output sizes
and padding come from :mod:`cnnkit.geometry`.

Example::

    >>> from cnnkit.reference import conv2d, conv2d_backward, relu, relu_backward
    >>> y, c1 = conv2d(x, w, b, stride=1, padding="same")
    >>> a, c2 = relu(y)
    >>> dx, dw, db = conv2d_backward(relu_backward(da, c2), c1)
"""

from cnnkit.reference.activations import (
    elu,
    elu_backward,
    elu_derivative,
    leaky_relu,
    leaky_relu_backward,
    leaky_relu_derivative,
    maxout,
    maxout_backward,
    relu,
    relu_backward,
    relu_derivative,
    sigmoid,
    sigmoid_backward,
    sigmoid_derivative,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
    tanh_derivative,
)
from cnnkit.reference.attention import (
    attention_pool2d,
    attention_pool2d_backward,
    cbam_channel,
    cbam_channel_backward,
    cbam_spatial,
    cbam_spatial_backward,
    eca,
    eca_backward,
    embedded_gaussian,
    embedded_gaussian_backward,
    squeeze_excite,
    squeeze_excite_backward,
)
from cnnkit.reference.conv import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
)
from cnnkit.reference.gradcheck import max_normalized_error, numerical_gradient
from cnnkit.reference.init import fans, init_std_bound, init_weight
from cnnkit.reference.layers import (
    batchnorm,
    batchnorm_backward,
    dense,
    dense_backward,
    dropout,
    dropout_backward,
    embedding,
    embedding_backward,
    flatten,
    flatten_backward,
)
from cnnkit.reference.losses import bce, cross_entropy, mse
from cnnkit.reference.optim import (
    OPTIMIZERS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Momentum,
    Optimizer,
    RMSprop,
    create,
)
from cnnkit.reference.pool import (
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool,
    global_avg_pool1d,
    global_avg_pool1d_backward,
    global_avg_pool_backward,
    global_max_pool,
    global_max_pool1d,
    global_max_pool1d_backward,
    global_max_pool_backward,
    l2_pool2d,
    l2_pool2d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from cnnkit.reference.recurrent import gru, gru_backward, lstm, lstm_backward
from cnnkit.reference.resize import crop_concat, crop_concat_backward, upsample2d, upsample2d_backward

__all__ = [
    # conv
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "conv1d", "conv1d_backward",
    # upsampling and U-Net's skip
    "upsample2d", "upsample2d_backward", "crop_concat", "crop_concat_backward",
    # pooling
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "l2_pool2d", "l2_pool2d_backward", "global_avg_pool", "global_avg_pool_backward",
    "global_max_pool", "global_max_pool_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "global_max_pool1d", "global_max_pool1d_backward", "global_avg_pool1d", "global_avg_pool1d_backward",
    # recurrent (one direction of one layer; BPTT)
    "lstm", "lstm_backward", "gru", "gru_backward",
    # activations
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu", "relu_backward",
    "leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "maxout", "maxout_backward",
    "softmax", "softmax_backward",
    "sigmoid_derivative", "tanh_derivative", "relu_derivative", "leaky_relu_derivative",
    "elu_derivative",
    # attention
    "squeeze_excite", "squeeze_excite_backward", "eca", "eca_backward", "cbam_channel", "cbam_channel_backward",
    "cbam_spatial", "cbam_spatial_backward", "embedded_gaussian", "embedded_gaussian_backward",
    "attention_pool2d", "attention_pool2d_backward",
    # layers
    "dense", "dense_backward", "flatten", "flatten_backward", "dropout", "dropout_backward",
    "batchnorm", "batchnorm_backward", "embedding", "embedding_backward",
    # losses
    "mse", "bce", "cross_entropy",
    # optimisers
    "Optimizer", "SGD", "Momentum", "Adagrad", "Adadelta", "RMSprop", "Adam", "OPTIMIZERS", "create",
    # init
    "init_weight", "init_std_bound", "fans",
    # gradient checks
    "numerical_gradient", "max_normalized_error",
]
