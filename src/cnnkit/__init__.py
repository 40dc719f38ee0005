"""cnnkit: a toolkit and command line for convolutional neural networks."""

__version__ = "0.1.0"
