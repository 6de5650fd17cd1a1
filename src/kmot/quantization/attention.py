"""Quantization-aware MultiHeadAttention: fake quantizers where LiteRT's int8 kernels rescale.

LiteRT runs a Keras MultiHeadAttention as projections (FULLY_CONNECTED, then a
separate bias ADD), TRANSPOSEs, a BATCH_MATMUL for the scores, a MUL by
``1/sqrt(key_dim)``, SOFTMAX (a fixed output scale of 1/256), a BATCH_MATMUL for
the context and the output projection. `QuantizedMultiHeadAttention` computes the
same values as ops that each take one int8 scale:

* each projection as a 1x1 CONV_2D with its bias fused (a 3-D FULLY_CONNECTED
  keeps its bias ADD apart, in float), its kernel fake-quantized per tensor;
* an activation quantizer after the query, key and value projections, the
  scaled query, the scores, the softmax (fixed range) and the context.

The output projection's quantizer is the layer's own (placed like any layer's).
Only self- and cross-attention over rank-3 inputs with the default attention
axes and no gate are rewritten; other configurations stay float.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kmot.quantization.quantizers import ActivationQuantizer, FakeQuantTransform

__all__ = ["QuantizedMultiHeadAttention", "attention_kernels", "is_quantizable_attention",
           "quantized_attention"]

_SOFTMAX_RANGE = (0.0, 255 / 256)
_POINTS = ("query", "key", "value", "query_scaled", "scores", "context")
_PROJECTIONS = ("query", "key", "value", "attention_output")


def attention_kernels(layer) -> tuple[str, ...]:
    """The weight keys of a MultiHeadAttention's four projection kernels."""
    return tuple(f"{name}/kernel" for name in _PROJECTIONS)


def is_quantizable_attention(layer) -> bool:
    """A built MultiHeadAttention `QuantizedMultiHeadAttention` can rewrite."""
    if not isinstance(layer, keras.layers.MultiHeadAttention) or not layer.built:
        return False
    config = (layer.get_build_config() or {}).get("shapes_dict", {})
    shape = config.get("query_shape")
    return (shape is not None and len(shape) == 3 and not layer._use_gate
            and tuple(layer._attention_axes) == (1,)
            and getattr(layer._query_dense, "quantization_mode", None) is None)


def _per_tensor(kernel):
    """Idempotent on an already fake-quantized kernel; here right before the conv, so
    that the converter reads the int8 filter from it."""
    return FakeQuantTransform(num_bits=8)(kernel, training=False)


def _conv_projection(dense, x, heads_out: tuple[int, ...] | None):
    """``dense(x)`` for a (b, t, c[, ...]) input as EXPAND_DIMS/RESHAPE, CONV_2D, RESHAPE."""
    kernel = ops.convert_to_tensor(dense.kernel)
    shape = [int(d) for d in kernel.shape]
    split = len(shape) - (len(heads_out) if heads_out else 1)
    inner = int(np.prod(shape[:split]))
    outer = int(np.prod(shape[split:]))
    steps = x.shape[1]
    h = ops.reshape(x, (-1, steps, 1, inner))
    filters = _per_tensor(ops.reshape(kernel, (1, 1, inner, outer)))
    y = ops.conv(h, filters, strides=1, padding="valid")
    if dense.bias is not None:
        y = y + ops.reshape(ops.convert_to_tensor(dense.bias), (outer,))
    return ops.reshape(y, (-1, steps) + (tuple(heads_out) if heads_out else (outer,)))


@keras.saving.register_keras_serializable(package="kmot")
class QuantizedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """A MultiHeadAttention with int8 fake quantization at LiteRT's rescaling points.

    Same config and weights as the layer it replaces (its projections are the same
    EinsumDense sublayers, so pruning and clustering chains on ``query/kernel`` and
    the others carry over); it adds `ActivationQuantizer` sublayers.
    """

    simulates_deployment = True

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        self.quantizers = {}
        for point in _POINTS:
            q = ActivationQuantizer(name=f"{point}_quant")
            q.build(())
            self.quantizers[point] = q
        probs = ActivationQuantizer(fixed_range=_SOFTMAX_RANGE, name="softmax_quant")
        probs.build(())
        self.quantizers["softmax"] = probs

    def call(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None,
             attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False):
        if key is None:
            key = value
        attention_mask = self._compute_attention_mask(
            query, value, query_mask=getattr(query, "_keras_mask", None),
            value_mask=getattr(value, "_keras_mask", None),
            key_mask=getattr(key, "_keras_mask", None), attention_mask=attention_mask,
            use_causal_mask=use_causal_mask)
        q = self.quantizers
        heads = (self._num_heads, self._key_dim)
        query_p = q["query"](_conv_projection(self._query_dense, query, heads), training=training)
        key_p = q["key"](_conv_projection(self._key_dense, key, heads), training=training)
        value_p = q["value"](_conv_projection(self._value_dense, value,
                                              (self._num_heads, self._value_dim)),
                             training=training)
        query_p = q["query_scaled"](
            ops.multiply(query_p, ops.cast(self._inverse_sqrt_key_dim, query_p.dtype)),
            training=training)
        scores = q["scores"](ops.einsum(self._dot_product_equation, key_p, query_p),
                             training=training)
        probs = q["softmax"](self._masked_softmax(scores, attention_mask), training=training)
        dropped = self._dropout_layer(probs, training=training) if self._dropout > 0 else probs
        context = q["context"](ops.einsum(self._combine_equation, dropped, value_p),
                               training=training)
        out = _conv_projection(self._output_dense, ops.reshape(
            context, (-1, context.shape[1], self._num_heads * self._value_dim)), None)
        if return_attention_scores:
            return out, probs
        return out


def quantized_attention(layer):
    """`layer` (a MultiHeadAttention, or a wrapper of one) as a
    `QuantizedMultiHeadAttention` with the same weights and its chains carried over."""
    from kmot.core import Carried, OptimizedLayer, rewrap

    inner = layer.layer if isinstance(layer, OptimizedLayer) else layer
    new = QuantizedMultiHeadAttention.from_config(inner.get_config())
    new.build_from_config(inner.get_build_config())
    for name in _PROJECTIONS:
        getattr(new, f"_{'output' if name == 'attention_output' else name}_dense").set_weights(
            getattr(inner, f"_{'output' if name == 'attention_output' else name}_dense").get_weights())
    chains = {}
    if isinstance(layer, OptimizedLayer):
        chains = {key: Carried(layer, key) for key in layer.transforms}
    # The kernels' fake quantization is in `call`, after they are reshaped for the
    # convolution: the converter reads int8 filters from a FakeQuant right before it.
    return rewrap(new, chains)
