"""Tools that sit apart from training: ``compress`` and ``export`` act on finished runs (prune, int8,
distil; ONNX, TorchScript, safetensors), ``tune`` searches hyperparameters over many runs."""
