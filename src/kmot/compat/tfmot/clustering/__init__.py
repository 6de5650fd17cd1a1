"""``tfmot.clustering``: ``keras`` holds the clustering API."""

from kmot.compat.tfmot.clustering import keras

__all__ = ["keras"]
