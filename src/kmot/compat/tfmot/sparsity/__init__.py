"""``tfmot.sparsity``: ``keras`` holds the pruning API."""

from kmot.compat.tfmot.sparsity import keras

__all__ = ["keras"]
