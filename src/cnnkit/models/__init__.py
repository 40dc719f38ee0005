"""Models: the registry of named networks and the declarative layer-list builder."""

from cnnkit.models.base import Classifier
from cnnkit.models.registry import MODELS, create_model, default_input, get_model, list_models, register_model
from cnnkit.models.spec import DeclarativeNet, build_torch
from cnnkit.spec import LayerSpec, infer_shapes, parse_layers

# Importing a family module registers its builders.
from cnnkit.models import detection, lenet, segmentation, zoo  # noqa: E402,F401  (after the registry)
from cnnkit.models import text  # noqa: E402,F401  (kim_cnn, char_cnn, dpcnn)
from cnnkit.models import timeseries  # noqa: E402,F401  (fcn1d, resnet1d, inception_time, lstm_fcn, cnn_lstm, tcn)
from cnnkit.models import video  # noqa: E402,F401  (convlstm_frames, convgru_frames, *_video, rcnn)
from cnnkit.models import generative  # noqa: E402,F401  (conv_autoencoder, vae, dcgan, conv_encoder)

__all__ = ["MODELS", "Classifier", "create_model", "DeclarativeNet", "LayerSpec", "build_torch", "default_input",
           "get_model", "infer_shapes", "list_models", "parse_layers", "register_model"]
