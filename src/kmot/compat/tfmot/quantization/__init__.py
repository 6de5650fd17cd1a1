"""``tfmot.quantization``: ``keras`` holds the quantization-aware training API."""

from kmot.compat.tfmot.quantization import keras

__all__ = ["keras"]
