"""`quantize_model`: quantization-aware training for Keras 3 models, int8 for LiteRT."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from kmot.core import OptimizedLayer, as_functional, clone_model, kernels, simulations
from kmot.core.constraints import KeepZerosTransform, SharedValuesTransform
from kmot.core.selection import LayerSelector
from kmot.errors import KmotError
from kmot.quantization.fold import fold_batch_norms
from kmot.quantization.placement import place_quantizers
from kmot.quantization.plan import plan
from kmot.quantization.rules import QuantizeRule

__all__ = ["quantize_model", "QuantizationError", "is_qat_model", "is_weight_qat_model", "SCHEMES"]

SCHEMES = ("int8", "int16x8")


class QuantizationError(KmotError, ValueError):
    """A model or option cannot be quantized as asked."""


def is_qat_model(model: keras.Model) -> bool:
    """True when `model` carries kmot activation quantizers (int8 QAT)."""
    return "activations" in simulations(model)


def is_weight_qat_model(model: keras.Model) -> bool:
    """True when weights carry fake quantization but activations do not (int16x8)."""
    return simulations(model) == {"weights"}


def _check_config(config):
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise QuantizationError(
            f"`config` maps layer names to 'skip' or a QuantizeRule. Received: {config!r}"
        )
    for name, value in config.items():
        if value != "skip" and not isinstance(value, QuantizeRule):
            raise QuantizationError(
                f"`config['{name}']` must be 'skip' or a kmot.quantization.QuantizeRule. "
                f"Received: {value!r}"
            )


def quantize_model(
    model: keras.Model,
    *,
    scheme: str = "int8",
    layers: LayerSelector = None,
    config: Mapping[str, Any] | None = None,
    strict: bool = False,
    fold_batch_norm: bool = True,
    preserve_sparsity: bool = False,
    preserve_clusters: bool = False,
    target: str | None = None,
) -> keras.Model:
    """Prepares a model for quantization-aware training (QAT) for LiteRT.

    Weights get symmetric narrow-range 8-bit fake quantization (per output
    channel for convolutions and depthwise convolutions, per tensor for Dense,
    EinsumDense and transposed convolutions); BatchNormalization folds into the
    convolution before it; activations get asymmetric quantizers with
    moving-average ranges where LiteRT writes a new scale (none between an op
    and a ReLU it fuses). Layers already pruned or clustered keep their
    transforms: fake quantization is appended to each weight's chain, so zeros
    and clusters reach the int8 file.

    Args:
        model: a Sequential or Functional model (nested models allowed).
        scheme: ``"int8"`` (int8 weights and activations, exported with no
            representative data) or ``"int16x8"`` (weights only; export with
            ``to_litert(..., quantize="int16x8", representative_data=...)``,
            which calibrates the 16-bit activations on the trained model).
        layers: which layers to quantize (default all); others stay float.
        config: per-layer control: ``{"name": "skip"}`` or a `QuantizeRule`.
        strict: raise instead of warning when a layer cannot be quantized.
        fold_batch_norm: fold BatchNormalization into the preceding layer.
        preserve_sparsity: weights that are exactly zero (a stripped pruned model)
            stay zero through training and into the int8 file (PQAT).
        preserve_clusters: a weight with at most `MAX_PRESERVED_CLUSTERS` distinct
            values (a stripped clustered model) keeps sharing them: its values
            become trainable centroids (CQAT; with `preserve_sparsity`, PCQAT).
            Wrappers still carrying pruning or clustering transforms keep them
            in any case.
        target: first check that this deployment target runs every op
            (`kmot.export.check`, e.g. ``"litert-int8"``: the int8 export will
            be strict; layers ``config`` skips may stay float); default: no check.

    Returns:
        A new model to fine-tune, then export with `kmot.export.to_litert`.

    Raises:
        QuantizationError: unknown scheme or config, (strict) a layer kmot
            cannot quantize, or an op ``target`` would not run.

    Example:
        >>> qat = quantize_model(model)                      # doctest: +SKIP
        >>> qat.compile(...); qat.fit(x, y, epochs=5)         # doctest: +SKIP
        >>> to_litert(qat, "model.tflite")                    # int8, no calibration
    """
    if scheme not in SCHEMES:
        raise QuantizationError(
            f"Expected scheme to be one of {list(SCHEMES)}. Received: scheme={scheme!r}"
        )
    _check_config(config)
    if is_qat_model(model):
        raise QuantizationError(
            f"Model '{model.name}' is already quantization-aware. Expected a float, pruned "
            "or clustered model. Received: a model with ActivationQuantizer layers"
        )
    work = as_functional(model)  # raises kmot's UnsupportedModelError with the remedy
    if target is not None:  # before any training: stop here, not at export
        from kmot.export.check import compatibility_problems

        skipped = tuple(k for k, v in (config or {}).items() if v == "skip")
        if problem := compatibility_problems(work, target, keep_float=skipped):
            raise QuantizationError(f"{problem} Received: target={target!r}")
    if preserve_sparsity or preserve_clusters:
        work = _preserved(work, sparsity=preserve_sparsity, clusters=preserve_clusters)
    if fold_batch_norm:
        work = fold_batch_norms(work)
    rules, unsupported, split, fused = plan(work, layers, config)
    if unsupported:
        message = (f"{len(unsupported)} layer(s) cannot be quantized and stay float: "
                   f"{', '.join(unsupported)}. Give them a QuantizeRule in `config=` (or "
                   "`get_quantize_rule()`), or export with allow_float_fallback=True.")
        if strict:
            raise QuantizationError(f"strict=True: {message} Received: strict=True")
        warnings.warn(message, stacklevel=2)
    return place_quantizers(work, rules, split, fused, quantize_activations=scheme == "int8")


#: The most distinct values a weight may have for `preserve_clusters` to keep them.
MAX_PRESERVED_CLUSTERS = 256


def _preserving(value: np.ndarray, sparsity: bool, clusters: bool) -> list:
    """The transforms that keep a plain weight's zeros and shared values."""
    zeros = bool(np.any(value == 0))
    distinct = np.unique(value).size
    if clusters and distinct <= MAX_PRESERVED_CLUSTERS:
        return [SharedValuesTransform(max(distinct, 2), keep_zeros=sparsity and zeros)]
    if sparsity and zeros:
        return [KeepZerosTransform()]
    return []


def _preserved(model, *, sparsity: bool, clusters: bool):
    """`model` with the zeros / shared values of its plain kernels held by transforms.

    Kernels that already carry transforms (a pruned or clustered model not yet
    stripped) keep their own chains: they say what to preserve better than values.
    """

    def replace(layer):
        wrapper = layer if isinstance(layer, OptimizedLayer) else None
        chains = wrapper.transforms if wrapper else {}
        added = {}
        for k in kernels(layer):
            if not chains.get(k.key):
                found = _preserving(np.asarray(k.variable.numpy()), sparsity, clusters)
                if found:
                    added[k.key] = found
        if not added:
            return None
        wrapper = wrapper or OptimizedLayer(layer, {})
        for key, found in added.items():
            for t in found:
                wrapper.add_transform(key, t)
        return wrapper

    return clone_model(model, replace=replace)


