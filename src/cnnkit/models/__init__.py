"""Models: the registry of named networks and the declarative layer-list builder."""

from cnnkit.models.base import Classifier
from cnnkit.models.registry import MODELS, create_model, default_input, get_model, list_models, register_model
from cnnkit.models.spec import DeclarativeNet, LayerSpec, build_torch, infer_shapes, parse_layers

__all__ = ["MODELS", "Classifier", "create_model", "DeclarativeNet", "LayerSpec", "build_torch", "default_input",
           "get_model", "infer_shapes", "list_models", "parse_layers", "register_model"]
