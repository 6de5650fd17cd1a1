"""Built-in example data and models, generated or bundled locally (no downloads)."""

from kmot.data.digits import digits, digits_cnn
from kmot.data.mnist1d import mnist1d

__all__ = ["digits", "digits_cnn", "mnist1d"]
