"""Errors raised by kmot.

Every error says what was expected, what was received (``Received: ...``) and how
to fix it, so that a user can act on the message alone.
"""

from __future__ import annotations

__all__ = [
    "KmotError",
    "UnsupportedModelError",
    "ModelFileError",
    "LayerSelectionError",
    "TransformError",
    "CalibrationDataError",
    "ConversionError",
    "InspectionError",
    "EvaluationError",
    "BudgetError",
    "ReportError",
    "RegistryError",
    "DistillationError",
    "DecompositionError",
]


class KmotError(Exception):
    """Base class of every error kmot raises on bad input or a failed step."""


class UnsupportedModelError(KmotError, TypeError):
    """The model's kind (e.g. a subclassed model) cannot be rewritten."""


class ModelFileError(KmotError, ValueError):
    """A model file is missing, not a ``.keras`` archive, damaged, or unsafe to load."""


class LayerSelectionError(KmotError, ValueError):
    """A `layers=` selector is malformed or selects nothing it should."""


class TransformError(KmotError, ValueError):
    """A weight transform cannot be attached to, or applied on, a weight."""


class CalibrationDataError(KmotError, ValueError):
    """Representative (calibration) data is missing or does not fit the model."""


class ConversionError(KmotError, RuntimeError):
    """The LiteRT converter or the interpreter rejected the model."""


class InspectionError(KmotError, ValueError):
    """A file or buffer is not a readable LiteRT flatbuffer."""


class EvaluationError(KmotError, ValueError):
    """Candidates, data or metrics given to `kmot.evaluate.compare` do not fit."""


class BudgetError(KmotError, ValueError):
    """A budgets file or dict for `kmot.evaluate.gate` is malformed."""


class ReportError(KmotError, ValueError):
    """A report file is missing, unreadable, or does not match the report schema."""


class RegistryError(KmotError, ValueError):
    """A registry name, version, artifact, report or stored object is missing or invalid."""


class DistillationError(KmotError, ValueError):
    """A student, teacher or option given to `kmot.distillation.distill` does not fit."""


class DecompositionError(KmotError, ValueError):
    """A rank, energy, compression or method given to `kmot.decomposition.factorize` does not fit."""
