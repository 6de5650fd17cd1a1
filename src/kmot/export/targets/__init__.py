"""Support tables: which ops each deployment target runs, one JSON file per target.

Each file names the runtime version it describes (``runtime``), where its op list
comes from (``source``), how the check converts the model for it
(``conversion``), what an op missing from the list means there (``missing``:
"fails" or "falls back") and the usual fix. `kmot.export.check` reads them.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

__all__ = ["TARGETS", "support_table"]

#: The targets `kmot check` knows, in the order it lists them.
TARGETS = ("litert", "litert-int8", "litert-int16x8", "litert-gpu", "tflm", "onnx")


@functools.cache
def support_table(target: str) -> dict[str, Any]:
    """The parsed table of `target` (one of `TARGETS`)."""
    name = target.replace("-", "_") + ".json"
    return json.loads(resources.files(__package__).joinpath(name).read_text("utf-8"))
