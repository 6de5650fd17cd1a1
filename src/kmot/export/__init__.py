"""Export to LiteRT (and SavedModel, ONNX), post-training quantization, reading LiteRT files.

TensorFlow and the LiteRT runtime load on first use, not at import.
"""

from kmot.export.calibration import DEFAULT_NUM_SAMPLES, InputSpec, calibration_samples, input_specs
from kmot.export.check import CheckReport
from kmot.export.check import check as check_compatibility
from kmot.export.inspect import ModelInspection, inspect
from kmot.export.layer_error import LayerError, QuantizationErrorReport, quantization_error
from kmot.export.litert import QUANTIZE_MODES, load_model, to_litert, write_atomic
from kmot.export.onnx import to_onnx
from kmot.export.parity import LayerParity, ParityReport, kernel_agreement, parity
from kmot.export.patterns import PatternCheck, check_tflite_pattern
from kmot.export.runtime import LiteRTModel
from kmot.export.saved_model import to_saved_model
from kmot.export.targets import TARGETS

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "TARGETS",
    "CheckReport",
    "InputSpec",
    "LayerError",
    "LayerParity",
    "LiteRTModel",
    "ModelInspection",
    "ParityReport",
    "PatternCheck",
    "QuantizationErrorReport",
    "QUANTIZE_MODES",
    "calibration_samples",
    "check_compatibility",
    "check_tflite_pattern",
    "input_specs",
    "inspect",
    "load_model",
    "parity",
    "kernel_agreement",
    "quantization_error",
    "to_litert",
    "to_onnx",
    "to_saved_model",
    "write_atomic",
]
