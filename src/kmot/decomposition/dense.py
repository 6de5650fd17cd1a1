"""Dense and EinsumDense kernels factored by truncated SVD into two layers.

``W (in, out) ~= A (in, r) @ B (r, out)``: the first layer applies ``A`` (no bias,
linear), the second ``B`` with the original bias and activation and the
original's name. An EinsumDense is split along its kernel's contracted and
output axes, read from the kernel-layout table: ``abc,cde->abde`` becomes
``abc,cz->abz`` then ``abz,zde->abde``.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from kmot.core.kernels import kernels
from kmot.decomposition.factors import as_matrix
from kmot.decomposition.layers import (
    built,
    config_of,
    input_shape,
    output_shape,
    positions,
    unsupported,
)
from kmot.decomposition.options import MatrixFactoring

__all__ = ["dense_factorings", "einsum_factorings"]

_LINEAR = {"use_bias": False, "activation": "linear", "activity_regularizer": None,
           "bias_regularizer": None, "bias_constraint": None}


def dense_factorings(layer: keras.layers.Dense) -> dict | str:
    """``{"svd": MatrixFactoring}`` for a Dense layer, or why it cannot be factored."""
    reason = unsupported(layer, keras.layers.Dense)
    if reason:
        return reason
    kernel = np.asarray(layer.kernel)
    dtype = kernel.dtype
    bias = [] if layer.bias is None else [np.asarray(layer.bias)]
    shape = input_shape(layer)
    where = positions(shape)

    def build(a, b, fresh):
        first = built(keras.layers.Dense,
                      config_of(layer, keras.layers.Dense, name=fresh(f"{layer.name}_reduce"),
                                units=a.shape[1], **_LINEAR), shape, [a], dtype)
        second = built(keras.layers.Dense, config_of(layer, keras.layers.Dense, name=layer.name),
                       first.compute_output_shape(shape), [b, *bias], dtype)
        return [first, second]

    return {"svd": MatrixFactoring("svd", kernel, sum(np.size(b) for b in bias),
                                   (where, where), build)}


def _parse(equation: str) -> tuple[str, str, str]:
    inputs, output = equation.replace(" ", "").split("->")
    x, k = inputs.split(",")
    return x, k, output


def _shape_letters(y: str) -> str | None:
    """The letters of `y` that EinsumDense's ``output_shape`` sizes (all but the batch)."""
    if y.startswith("..."):
        return y[3:]
    return None if "..." in y else y[1:]


def einsum_factorings(layer: keras.layers.EinsumDense) -> dict | str:
    """``{"svd": MatrixFactoring}`` for an EinsumDense layer, or why it cannot be factored."""
    reason = unsupported(layer, keras.layers.EinsumDense)
    if reason:
        return reason
    x, k, y = _parse(layer.equation)
    layout = kernels(layer)[0]
    in_letters = "".join(c for c in k if c in x and c not in y)
    out_letters = "".join(c for c in k if c in y and c not in x)
    if len(in_letters) + len(out_letters) != len(k) or not in_letters or not out_letters:
        return (f"equation {layer.equation!r}: each kernel axis must be either contracted "
                "with the input or an output axis (not both, as for a per-head weight)")
    letters = _shape_letters(y)
    if letters is None or (not y.startswith("...") and y[0] in out_letters):
        return f"equation {layer.equation!r}: the output's batch axis is not its first"
    z = next(c for c in "zyxwvutsrqponmlkjihgfedcba" if c not in layer.equation)
    first_out = min(y.index(c) for c in out_letters)
    y_mid = "".join(c for c in y[:first_out] if c not in out_letters) + z + "".join(
        c for c in y[first_out:] if c not in out_letters)
    sizes = dict(zip(letters, tuple(_as_tuple(layer.get_config()["output_shape"]))))
    kernel = np.asarray(layer.kernel)
    dtype = kernel.dtype
    in_axes, out_axes = layout.in_axes(), layout.out_axes()
    in_dims = tuple(kernel.shape[a] for a in in_axes)
    out_dims = tuple(kernel.shape[a] for a in out_axes)
    matrix = as_matrix(kernel, in_axes, out_axes)
    bias = [] if layer.bias is None else [np.asarray(layer.bias)]
    shape = input_shape(layer)
    # Outputs per kernel output entry: where each of the two factors is applied.
    where = math.prod(d for d in output_shape(layer)[1:] if d) // max(matrix.shape[1], 1)
    mid_letters = _shape_letters(y_mid)

    def build(a, b, fresh):
        r = a.shape[1]
        mid_shape = tuple(r if c == z else sizes[c] for c in mid_letters)
        first = built(keras.layers.EinsumDense, config_of(
            layer, keras.layers.EinsumDense, name=fresh(f"{layer.name}_reduce"),
            equation=f"{x},{in_letters}{z}->{y_mid}", output_shape=mid_shape, bias_axes=None,
            activation="linear", activity_regularizer=None, bias_regularizer=None,
            bias_constraint=None), shape, [a.reshape(*in_dims, r)], dtype)
        second = built(keras.layers.EinsumDense, config_of(
            layer, keras.layers.EinsumDense, name=layer.name,
            equation=f"{y_mid},{z}{out_letters}->{y}"),
            first.compute_output_shape(shape), [b.reshape(r, *out_dims), *bias], dtype)
        return [first, second]

    return {"svd": MatrixFactoring("svd", matrix, sum(np.size(b) for b in bias),
                                   (where, where), build)}


def _as_tuple(shape) -> tuple:
    return tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
