"""Conv1D and Conv2D kernels factored by Tucker-2 or by spatial SVD.

Tucker-2 (channel axes): a 1x1 conv to ``r_in`` channels, the kxk core conv
``r_in -> r_out`` with the original strides, padding and dilation, and a 1x1 conv
to the outputs with the original bias, activation and name. Spatial SVD (Conv2D):
the kernel as a ``(k_h * in, k_w * out)`` matrix, cut to rank r: a ``k_h x 1`` conv
to r channels, then a ``1 x k_w`` conv to the outputs; each takes its own axis's
stride, dilation and padding, which is exact because both pad with zeros and the
first has no bias.
"""

from __future__ import annotations

import keras
import numpy as np

from kmot.decomposition.layers import (
    built,
    config_of,
    input_shape,
    output_shape,
    positions,
    unsupported,
)
from kmot.decomposition.options import MatrixFactoring, TuckerFactoring

__all__ = ["conv_factorings", "CONVS"]

CONVS = (keras.layers.Conv1D, keras.layers.Conv2D)
_LINEAR = {"use_bias": False, "activation": "linear", "activity_regularizer": None,
           "bias_regularizer": None, "bias_constraint": None}


def _base(layer) -> type:
    return keras.layers.Conv2D if isinstance(layer, keras.layers.Conv2D) else keras.layers.Conv1D


def conv_factorings(layer) -> dict | str:
    """``{"tucker": ..., "spatial": ...}`` (spatial for Conv2D only) for a conv layer,
    or why it cannot be factored."""
    base = _base(layer)
    reason = unsupported(layer, base)
    if reason:
        return reason
    if layer.groups != 1:
        return f"a grouped convolution (groups={layer.groups}): left whole"
    kernel = np.asarray(layer.kernel)
    dtype, rank = kernel.dtype, kernel.ndim - 2
    ones = (1,) * rank
    bias = [] if layer.bias is None else [np.asarray(layer.bias)]
    n_bias = sum(np.size(b) for b in bias)
    data_format = layer.data_format
    shape_in, shape_out = input_shape(layer), output_shape(layer)
    p_in, p_out = positions(shape_in, data_format), positions(shape_out, data_format)
    pointwise = dict(kernel_size=ones, strides=ones, padding="valid", dilation_rate=ones)

    def tucker(u_in, core, u_out, fresh):
        chain, shape = [], shape_in
        if u_in is not None:
            chain.append(built(base, config_of(layer, base, name=fresh(f"{layer.name}_reduce"),
                                               filters=u_in.shape[1], **pointwise, **_LINEAR),
                               shape, [u_in.reshape(*ones, *u_in.shape)], dtype))
            shape = chain[-1].compute_output_shape(shape)
        last = u_out is None
        core_config = config_of(layer, base, filters=core.shape[-1],
                                name=layer.name if last else fresh(f"{layer.name}_core"),
                                **({} if last else _LINEAR))
        chain.append(built(base, core_config, shape, [core, *(bias if last else [])], dtype))
        if not last:
            shape = chain[-1].compute_output_shape(shape)
            chain.append(built(base, config_of(layer, base, name=layer.name, **pointwise), shape,
                               [u_out.T.reshape(*ones, *u_out.T.shape), *bias], dtype))
        return chain

    found = {"tucker": TuckerFactoring(kernel, n_bias, (p_in, p_out), tucker)}
    if rank != 2:
        return found
    kh, kw, cin, cout = kernel.shape
    matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
    (sh, sw), (dh, dw) = layer.strides, layer.dilation_rate
    rows, cols = (1, 2) if data_format == "channels_last" else (2, 3)
    # The first conv keeps every column: it runs at (output rows) x (input columns).
    p_mid = (shape_out[rows] or 1) * (shape_in[cols] or 1)

    def spatial(a, b, fresh):
        r = a.shape[1]
        first = built(base, config_of(layer, base, name=fresh(f"{layer.name}_vertical"), filters=r,
                                      kernel_size=(kh, 1), strides=(sh, 1), dilation_rate=(dh, 1),
                                      **_LINEAR),
                      shape_in, [a.reshape(kh, 1, cin, r)], dtype)
        second = built(base, config_of(layer, base, name=layer.name, kernel_size=(1, kw),
                                       strides=(1, sw), dilation_rate=(1, dw)),
                       first.compute_output_shape(shape_in),
                       [b.reshape(r, kw, cout).transpose(1, 0, 2)[None], *bias], dtype)
        return [first, second]

    found["spatial"] = MatrixFactoring("spatial", matrix, n_bias, (p_mid, p_out), spatial)
    return found
