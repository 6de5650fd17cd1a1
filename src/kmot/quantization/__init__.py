"""Quantization-aware training for LiteRT: fake quantizers, BN folding, `quantize_model`."""

from kmot.quantization.fold import fold_batch_norms, foldable_pairs
from kmot.quantization.noise import rounding_noise_floor
from kmot.quantization.quantize import (
    SCHEMES,
    QuantizationError,
    is_qat_model,
    is_weight_qat_model,
    quantize_model,
)
from kmot.quantization.quantizers import DEPTHWISE, ActivationQuantizer, FakeQuantTransform
from kmot.quantization.rules import QuantizeRule, rule_for
from kmot.quantization.tensorboard import QuantizationSummaries

__all__ = [
    "DEPTHWISE",
    "SCHEMES",
    "ActivationQuantizer",
    "FakeQuantTransform",
    "QuantizationError",
    "QuantizationSummaries",
    "QuantizeRule",
    "fold_batch_norms",
    "foldable_pairs",
    "is_qat_model",
    "is_weight_qat_model",
    "quantize_model",
    "rounding_noise_floor",
    "rule_for",
]
