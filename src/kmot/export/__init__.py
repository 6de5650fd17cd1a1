"""Export to LiteRT, post-training quantization, and flatbuffer inspection.

TensorFlow and the LiteRT runtime load on first use, not at import.
"""

from kmot.export.calibration import DEFAULT_NUM_SAMPLES, InputSpec, calibration_samples, input_specs
try:
    from kmot.export.inspect import ModelInspection, inspect
except ImportError:  # TEMP while inspect is written
    pass
from kmot.export.layer_error import LayerError, QuantizationErrorReport, quantization_error
from kmot.export.litert import QUANTIZE_MODES, load_model, to_litert, write_atomic
from kmot.export.runtime import LiteRTModel

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "InputSpec",
    "LiteRTModel",
    "ModelInspection",
    "QUANTIZE_MODES",
    "calibration_samples",
    "input_specs",
    "inspect",
    "load_model",
    "quantization_error",
    "to_litert",
    "write_atomic",
]
