"""``tfmot.quantization.keras`` on kmot: quantization-aware training with tfmot's names.

Whole-model QAT is `kmot.quantization.quantize_model`. Selective QAT is tfmot's
annotate-then-apply: `quantize_annotate_layer` marks layers (in a Sequential or
in ``keras.models.clone_model(clone_function=...)``), `quantize_annotate_model`
marks all, and `quantize_apply` quantizes the marked ones (native:
``quantize_model(model, layers=[names])``), with a scheme from
``experimental.combine`` for PQAT / CQAT / PCQAT.
"""

from __future__ import annotations

from typing import Any

import keras

from kmot import quantization as _native
from kmot.compat.tfmot._scopes import WRAPPER, custom_scope, unmatched
from kmot.compat.tfmot.experimental.combine import Default8BitQuantizeScheme
from kmot.errors import KmotError

__all__ = ["QuantizeConfig", "quantize_annotate_layer", "quantize_annotate_model",
           "quantize_apply", "quantize_model", "quantize_scope"]

_PREFIX = "quant_"


def _check_prefix(prefix: str) -> None:
    if prefix != _PREFIX:
        raise KmotError(
            "kmot keeps every layer's name through QAT (its wrappers take no prefix). "
            f"Expected quantized_layer_name_prefix={_PREFIX!r} (the default). Received: "
            f"{prefix!r}")


class QuantizeConfig:
    """tfmot's per-layer quantization config; kmot uses rules instead.

    Raises:
        KmotError: always, naming the native way.
    """

    def __init__(self, *args, **kwargs):
        raise KmotError(
            "kmot has no QuantizeConfig. Expected a kmot.quantization.QuantizeRule, given "
            "per layer with quantize_model(model, config={'layer_name': rule}) or returned "
            "by a custom layer's get_quantize_rule(). Received: a QuantizeConfig")


@keras.saving.register_keras_serializable(package="kmot.compat")
class QuantizeAnnotate(keras.layers.Wrapper):
    """A layer marked for quantization by `quantize_annotate_layer` (it computes as the
    layer does; `quantize_apply` replaces it with the quantized layer)."""

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def quantize_annotate_layer(to_annotate: keras.layers.Layer, quantize_config: Any = None):
    """Marks one layer for `quantize_apply`.

    Raises:
        KmotError: a `quantize_config` (see `QuantizeConfig`), or not a layer.
    """
    if quantize_config is not None:
        QuantizeConfig()
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise KmotError(
            "Expected a keras layer to annotate (quantize_annotate_model annotates a whole "
            f"model). Received: {type(to_annotate).__name__}")
    return QuantizeAnnotate(to_annotate, name=f"quantize_annotate_{to_annotate.name}")


def quantize_annotate_model(to_annotate: keras.Model) -> keras.Model:
    """Marks every layer of a Sequential or Functional model for `quantize_apply`."""
    if not isinstance(to_annotate, keras.Model):
        raise KmotError(f"Expected a keras.Model. Received: {type(to_annotate).__name__}")
    marked = keras.models.clone_model(
        to_annotate, clone_function=lambda layer: layer)  # the same layers: nothing copied
    marked._kmot_annotate_all = True
    return marked


def quantize_apply(model: keras.Model, scheme: Any = None,
                   quantized_layer_name_prefix: str = _PREFIX) -> keras.Model:
    """Quantizes the annotated layers (all of them after `quantize_annotate_model`).

    Raises:
        KmotError: nothing annotated, an unknown scheme, or a name prefix.
    """
    _check_prefix(quantized_layer_name_prefix)
    scheme = scheme if scheme is not None else Default8BitQuantizeScheme()
    if not isinstance(scheme, Default8BitQuantizeScheme):
        raise KmotError(
            "Expected a scheme from kmot.compat.tfmot.experimental.combine (or none). "
            f"Received: {type(scheme).__name__}")
    marked = [layer for layer in model.layers if isinstance(layer, QuantizeAnnotate)]
    every = getattr(model, "_kmot_annotate_all", False)
    if not marked and not every:
        raise KmotError(
            "quantize_apply quantizes annotated layers and this model has none. Expected "
            "quantize_annotate_model(model), or layers wrapped with quantize_annotate_layer "
            "(e.g. in keras.models.clone_model(model, clone_function=...)). Received: model "
            f"'{model.name}' without annotations")
    plain = keras.models.clone_model(
        model, clone_function=lambda layer: layer.layer if isinstance(layer, QuantizeAnnotate)
        else layer)
    names = None if every else [layer.layer.name for layer in marked]
    return _native.quantize_model(plain, layers=names, **scheme.options())


def quantize_model(to_quantize: keras.Model, quantized_layer_name_prefix: str = _PREFIX):
    """Whole-model QAT (native: `kmot.quantization.quantize_model`)."""
    _check_prefix(quantized_layer_name_prefix)
    return _native.quantize_model(to_quantize)


def quantize_scope(*args: dict[str, Any]):
    """tfmot's loading scope: kmot's QAT classes are registered already; dicts passed are
    added as custom objects."""
    return custom_scope(*args)


# tfmot's names kmot has no counterpart of: a KmotError naming the native way.
__getattr__ = unmatched("tfmot.quantization.keras", {
    "QuantizeWrapper": f"{WRAPPER}; kmot.quantization.is_qat_model(model) tells a QAT model",
    "QuantizeWrapperV2": f"{WRAPPER}; kmot.quantization.is_qat_model(model) tells a QAT model",
    "QuantizeLayer": "activations are quantized by kmot.quantization.ActivationQuantizer layers",
    "QuantizeRegistry": "a kmot.quantization.QuantizeRule per layer: quantize_model(model, "
                        "config={'layer_name': rule}) or a custom layer's get_quantize_rule()",
    "QuantizeLayoutTransform": "kmot.quantization.quantize_model plans the graph itself "
                               "(BatchNorm folding: kmot.quantization.fold_batch_norms)",
    "quantizers": "a kmot.quantization.QuantizeRule (bits, symmetric, per channel) per layer",
    "default_8bit": "kmot.quantization.quantize_model (its default scheme is 8-bit)",
    "default_n_bit": "a kmot.quantization.QuantizeRule per layer",
})
