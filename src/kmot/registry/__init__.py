"""Model registry: versioned, checksummed artifacts with a production pointer and rollback.

Embedded: a folder holding a SQLite index and a content-addressed ``objects/``
folder, safe for several processes at once. Or, for a team, an MLflow tracking
server's model registry: ``Registry("mlflow://host:port")`` (``pip install
"kmot[mlflow]"``), with the same API. No TensorFlow or Keras is imported.

Example:
    >>> from kmot.registry import Registry
    >>> registry = Registry("registry")        # default: $KMOT_REGISTRY or ~/.kmot/registry
    >>> v = registry.push("model.tflite", name="digits",
    ...                   report="report/report.json")      # doctest: +SKIP
    >>> registry.promote("digits", v.version)               # doctest: +SKIP
    >>> registry.rollback("digits")                         # doctest: +SKIP
    >>> registry.pull("digits", dest="deploy/model.tflite")  # doctest: +SKIP
    >>> registry.verify().ok                                # doctest: +SKIP
    True
    >>> registry.gc().removed_objects                       # doctest: +SKIP
    ()
"""

from kmot.registry.records import (
    GcResult,
    ModelVersion,
    Promotion,
    RegisteredModel,
    VerifyProblem,
    VerifyResult,
)
from kmot.registry.store import Registry, default_root

__all__ = ["GcResult", "ModelVersion", "Promotion", "RegisteredModel", "Registry",
           "VerifyProblem", "VerifyResult", "default_root"]
