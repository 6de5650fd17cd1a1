"""Content hashes of models: what a report names as a candidate's source."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

__all__ = ["model_sha256"]


def model_sha256(model: Any) -> str:
    """SHA-256 of a model: of the file for a path, of its config and weights for a
    Keras model in memory (so two identical models hash alike, wherever they live).

    Example:
        >>> model_sha256("model.keras")[:12]  # doctest: +SKIP
        '3f2a9c0d81be'
    """
    if isinstance(model, (str, os.PathLike)):
        from kmot._files import sha256_file

        return sha256_file(model)
    import numpy as np

    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()
