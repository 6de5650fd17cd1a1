"""``tfmot.experimental``: ``combine`` holds the collaborative-optimization schemes."""

from kmot.compat.tfmot.experimental import combine

__all__ = ["combine"]
