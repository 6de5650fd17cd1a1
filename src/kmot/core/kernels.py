"""Which weights of a layer are kernels, and where their channels are.

One table for every technique: pruning patterns (N:M groups run along the input
channels), per-channel clustering and quantization (along the output channels),
BatchNormalization folding (scales the output channels) and structured pruning
(removes input and output channels) all read `kernels(layer)`.

A kernel's *output channels* are the axes indexed by the layer's output channels
(one axis, or two for a depthwise kernel whose ``in * multiplier`` outputs span
its last two axes); its *input channels* are the axes contracted with the input.

Layers not in the table are searched for known sublayers (an LSTM's cell, the
four EinsumDense of a MultiHeadAttention, a custom block's Dense layers), so a
weight is found under its key relative to the outer layer (``"query/kernel"``).
A custom layer declares its own with ``get_kernel_layouts() -> list[KernelLayout]``
(keys relative to the layer), or, as in tfmot, lists its kernels with
``get_prunable_weights()`` (output channels last, input channels before them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras

from kmot.errors import TransformError

__all__ = ["KernelLayout", "Kernel", "kernels", "kernel_layouts", "unknown_weights",
           "register_kernel_layout", "warn_unknown_weights", "channels_last", "channels_back"]


@dataclass(frozen=True)
class KernelLayout:
    """Where a kernel's channels are.

    Args:
        key: the weight's key relative to the layer (``"kernel"``,
            ``"depthwise_kernel"``, ``"cell/kernel"``; see `kmot.core.weight_key`).
        in_axes: the axes contracted with the layer's input channels (negative:
            from the end). Empty for a depthwise kernel's outputs' own channel.
        out_axes: the axes of the output channels, in order; two axes (``(-2, -1)``)
            form one channel axis of their product's size (depthwise kernels).
        channelwise: each output channel reads one input channel only (depthwise):
            its input channel is ``out_channel // multiplier``.
    """

    key: str
    in_axes: tuple[int, ...]
    out_axes: tuple[int, ...]
    channelwise: bool = False

    def prefixed(self, prefix: str) -> KernelLayout:
        return KernelLayout(f"{prefix}/{self.key}" if prefix else self.key,
                            self.in_axes, self.out_axes, self.channelwise)


@dataclass(frozen=True)
class Kernel:
    """A built layer's kernel: its variable and its layout."""

    layout: KernelLayout
    variable: keras.Variable

    @property
    def key(self) -> str:
        return self.layout.key

    def out_axes(self) -> tuple[int, ...]:
        """The output-channel axes as non-negative indices."""
        rank = len(self.variable.shape)
        return tuple(a % rank for a in self.layout.out_axes)

    def in_axes(self) -> tuple[int, ...]:
        rank = len(self.variable.shape)
        return tuple(a % rank for a in self.layout.in_axes)

    def out_channels(self) -> int:
        size = 1
        for a in self.out_axes():
            size *= int(self.variable.shape[a])
        return size


def _one(key: str, in_axis: int, out_axis: int) -> Callable:
    return lambda layer: (KernelLayout(key, (in_axis,), (out_axis,)),)


def _einsum(layer) -> tuple[KernelLayout, ...]:
    """EinsumDense: from its equation, kernel letters in the output are output
    channels, the others are contracted with the input."""
    spec = layer.equation.replace(" ", "")
    inputs, output = spec.split("->")
    _, kernel = inputs.split(",")
    out_axes = tuple(i for i, c in enumerate(kernel) if c in output)
    in_axes = tuple(i for i, c in enumerate(kernel) if c not in output)
    return (KernelLayout("kernel", in_axes, out_axes),)


def _depthwise(key: str) -> Callable:
    # (..., in, multiplier): output channel c * multiplier + m reads input channel c.
    return lambda layer: (KernelLayout(key, (), (-2, -1), channelwise=True),)


def _separable(layer):
    return (_depthwise("depthwise_kernel")(layer)[0],
            KernelLayout("pointwise_kernel", (-2,), (-1,)))


def _recurrent(layer):
    # (in, gates * units) and (units, gates * units): the gates' units are the outputs.
    return (KernelLayout("kernel", (0,), (1,)), KernelLayout("recurrent_kernel", (0,), (1,)))


def _none(layer):
    return ()


L = keras.layers
#: Kernel layouts by layer class (subclasses match). Classes mapped to `_none`
#: are known to hold no kernel (their weights are scales, offsets, slopes).
_TABLE: dict[type, Callable[[keras.layers.Layer], tuple[KernelLayout, ...]]] = {
    L.Dense: _one("kernel", -2, -1),
    L.EinsumDense: _einsum,
    L.Conv1D: _one("kernel", -2, -1),
    L.Conv2D: _one("kernel", -2, -1),
    L.Conv3D: _one("kernel", -2, -1),
    L.Conv1DTranspose: _one("kernel", -1, -2),
    L.Conv2DTranspose: _one("kernel", -1, -2),
    L.Conv3DTranspose: _one("kernel", -1, -2),
    L.DepthwiseConv1D: _depthwise("kernel"),
    L.DepthwiseConv2D: _depthwise("kernel"),
    L.SeparableConv1D: _separable,
    L.SeparableConv2D: _separable,
    # A lookup: rows are picked, not contracted with an input channel.
    L.Embedding: lambda layer: (KernelLayout("embeddings", (), (-1,)),),
    L.LSTMCell: _recurrent,
    L.GRUCell: _recurrent,
    L.SimpleRNNCell: _recurrent,
    L.BatchNormalization: _none,
    L.LayerNormalization: _none,
    L.GroupNormalization: _none,
    L.UnitNormalization: _none,
    L.Normalization: _none,
    L.PReLU: _none,
}
del L


def register_kernel_layout(cls: type, layouts: Callable[[keras.layers.Layer], tuple[KernelLayout, ...]]) -> None:
    """Declares the kernels of a layer class for every technique.

    Args:
        cls: a Keras layer class (its subclasses match too).
        layouts: ``fn(layer) -> tuple[KernelLayout, ...]`` (empty: no kernel).

    Example:
        >>> register_kernel_layout(MyDense, lambda layer: (KernelLayout("w", (0,), (1,)),))  # doctest: +SKIP
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)) or not callable(layouts):
        raise TransformError(
            "register_kernel_layout takes a Keras layer class and a function "
            "fn(layer) -> tuple of KernelLayout. "
            f"Received: cls={cls!r}, layouts={layouts!r}"
        )
    _TABLE[cls] = layouts


def _table_entry(layer) -> Callable | None:
    for cls in type(layer).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]
    return None


def _declared(layer) -> tuple[KernelLayout, ...] | None:
    """A custom layer's own declaration, or None."""
    from kmot.core.wrapper import weight_key

    custom = getattr(layer, "get_kernel_layouts", None)
    if callable(custom):
        return tuple(custom())
    custom = getattr(layer, "get_prunable_weights", None)
    if callable(custom):
        found = []
        for v in custom():
            rank = len(v.shape)
            found.append(KernelLayout(weight_key(layer, v), (-2,) if rank >= 2 else (),
                                      (-1,) if rank >= 1 else ()))
        return tuple(found)
    return None


def _sublayers(layer) -> list[keras.layers.Layer]:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def kernel_layouts(layer: keras.layers.Layer, *, prefix: str = "") -> tuple[KernelLayout, ...]:
    """The kernel layouts of `layer`, built or not (keys relative to `layer`).

    Unbuilt layers outside the table have no sublayers yet: they report none.
    """
    declared = _declared(layer)
    if declared is not None:
        return tuple(k.prefixed(prefix) for k in declared)
    entry = _table_entry(layer)
    if entry is not None:
        return tuple(k.prefixed(prefix) for k in entry(layer))
    found: list[KernelLayout] = []
    for sub in _sublayers(layer):
        found.extend(kernel_layouts(sub, prefix=f"{prefix}/{sub.name}" if prefix else sub.name))
    return tuple(found)


def kernels(layer: keras.layers.Layer) -> list[Kernel]:
    """The kernels of a built layer, with their variables (wrappers: the inner layer's).

    Example:
        >>> conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
        >>> conv.build((None, 8, 8, 4))
        >>> [(k.key, k.out_axes(), k.out_channels()) for k in kernels(conv)]
        [('kernel', (2, 3), 8)]
    """
    from kmot.core.wrapper import OptimizedLayer, weight_key

    if isinstance(layer, OptimizedLayer):
        layer = layer.layer
    by_key = {weight_key(layer, v): v for v in layer.weights}
    found = []
    for layout in kernel_layouts(layer):
        variable = by_key.get(layout.key)
        if variable is None:
            if not layer.built:
                continue
            raise TransformError(
                f"Layer '{layer.name}' ({type(layer).__name__}) declares a kernel "
                f"{layout.key!r} it does not have. Expected one of {sorted(by_key)}. "
                f"Received: {layout}"
            )
        found.append(Kernel(layout, variable))
    return found


def unknown_weights(layer: keras.layers.Layer) -> list[str]:
    """Keys of `layer`'s weights that look like kernels (2-D or more, trainable)
    but that no table entry, sublayer or declaration accounts for."""
    from kmot.core.wrapper import OptimizedLayer, weight_key

    if isinstance(layer, OptimizedLayer):
        layer = layer.layer
    if _declared(layer) is not None or _table_entry(layer) is not None:
        return []
    accounted: list[str] = []
    _accounted_sublayers(layer, "", accounted)
    return [key for key in (weight_key(layer, v) for v in layer.trainable_weights
                            if len(v.shape) >= 2)
            if not any(key.startswith(f"{p}/") for p in accounted)]


def _accounted_sublayers(layer, prefix: str, into: list[str]) -> None:
    """Key prefixes of the sublayers the table or a declaration describes."""
    for sub in _sublayers(layer):
        path = f"{prefix}/{sub.name}" if prefix else sub.name
        if _declared(sub) is not None or _table_entry(sub) is not None:
            into.append(path)
        else:
            _accounted_sublayers(sub, path, into)


def iter_kernels(model: keras.layers.Layer) -> Iterator[tuple[keras.layers.Layer, Kernel]]:
    """``(leaf_layer, kernel)`` for every kernel of every leaf layer of `model`."""
    from kmot.core.selection import walk_layers

    for layer in walk_layers(model):
        for k in kernels(layer):
            yield layer, k


def warn_unknown_weights(model: keras.layers.Layer, selected: Callable, technique: str) -> None:
    """One warning naming the selected layers whose kernel-like weights `technique`
    leaves alone because no layout describes them."""
    import warnings

    from kmot.core.selection import walk_layers

    found = []
    for layer in walk_layers(model):
        if selected(layer):
            keys = unknown_weights(layer)
            if keys:
                found.append(f"{layer.name} ({type(layer).__name__}: {', '.join(keys)})")
    if found:
        warnings.warn(
            f"{technique} left {len(found)} layer(s) untouched whose weights it does not know "
            f"as kernels: {'; '.join(found)}. Declare them with a get_kernel_layouts() method "
            "(or tfmot's get_prunable_weights()), or kmot.core.register_kernel_layout(cls, fn).",
            stacklevel=3,
        )


def channels_last(value, axes: tuple[int, ...]):
    """`value` with its channel `axes` moved to the end and merged into one axis.

    Works on tensors (keras.ops) and NumPy arrays alike; undo with `channels_back`.
    """
    import numpy as np

    from keras import ops

    lib_moveaxis, lib_reshape = ((np.moveaxis, np.reshape) if isinstance(value, np.ndarray)
                                 else (ops.moveaxis, ops.reshape))
    rank = len(value.shape)
    axes = tuple(a % rank for a in axes)
    moved = lib_moveaxis(value, axes, tuple(range(rank - len(axes), rank)))
    shape = tuple(moved.shape)
    channels = 1
    for d in shape[rank - len(axes):]:
        channels *= int(d)
    return lib_reshape(moved, shape[: rank - len(axes)] + (channels,))


def channels_back(value, axes: tuple[int, ...], shape: tuple[int, ...]):
    """The inverse of `channels_last` for a weight of `shape`."""
    import numpy as np

    from keras import ops

    lib_moveaxis, lib_reshape = ((np.moveaxis, np.reshape) if isinstance(value, np.ndarray)
                                 else (ops.moveaxis, ops.reshape))
    rank = len(shape)
    axes = tuple(a % rank for a in axes)
    rest = [d for i, d in enumerate(shape) if i not in axes]
    moved = lib_reshape(value, tuple(rest) + tuple(shape[a] for a in axes))
    return lib_moveaxis(moved, tuple(range(rank - len(axes), rank)), axes)
