"""Built-in example data and models, generated or bundled locally (no downloads)."""

from kmot.data.digits import digits, digits_cnn

__all__ = ["digits", "digits_cnn"]
