"""Fake quantizers: `FakeQuantTransform` for weights, `ActivationQuantizer` for tensors.

Both use `keras.quantizers.fake_quant_with_min_max_vars`, which runs on every
backend and, on TensorFlow, emits the FakeQuant ops that the LiteRT converter
turns into real int8 kernels with exactly the simulated scales.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np
from keras import ops

from kmot.core.replicas import global_max, global_min
from kmot.core.transform import WeightTransform

__all__ = ["FakeQuantTransform", "ActivationQuantizer", "DEPTHWISE"]

_fake_quant = keras.quantizers.fake_quant_with_min_max_vars


def _fake_quant_tensor(x, lo, hi, num_bits: int):
    """`_fake_quant` of a tensor whose range is not trained (a moving average or fixed).

    On PyTorch, ``_torch_fake_quant`` on the same grid (Keras's scale and rounded
    zero point), with the range math on torch scalars out of autograd: Keras's
    generic version runs about 16 element-wise passes over the tensor, forward and
    backward, to compute gradients for a range nothing trains, and tripled the
    epoch of a QAT conv net. The
    gradient to `x` is the same straight-through one (zero outside the range);
    values differ at most at exact rounding ties. Not passed on: the gradient to the
    range, which Keras's version sends through a training batch's min and max into
    those two elements of `x` (weighted 1 - ema_decay once the range is set).
    """
    if not _is_torch_tensor(x):
        return _fake_quant(x, lo, hi, num_bits=num_bits)
    import torch

    levels = 2 ** num_bits - 1
    with torch.no_grad():
        lo, hi = _torch_float(lo), _torch_float(hi)
        scale = (hi - lo) / levels
        zero_point = torch.round(torch.clamp(-lo / scale, 0, levels))
    xf = x if x.dtype == torch.float32 else x.float()
    out = _torch_fake_quant().apply(xf, scale, zero_point, levels)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _torch_float(value):
    """`value` as a float32 torch tensor (a Keras variable's value, a tensor, a float)."""
    import torch

    value = getattr(value, "value", value)
    if isinstance(value, torch.Tensor):
        return value.detach().float()
    return torch.tensor(float(value), dtype=torch.float32)


@functools.cache
def _torch_fake_quant():
    """torch's per-tensor fake quantization in five passes over the tensor, forward and
    backward (torch's own fused op, whose kernel is scalar, took about 1.6x as long).

    Forward: ``(clamp(round(x / scale + zero_point), 0, levels) - zero_point) * scale``,
    as torch's op computes it; backward: the straight-through gradient, zero where the
    rounded value fell outside the grid (torch's cached mask). Written as an
    autograd function so that the mask is one float tensor reused in place.
    """
    import torch

    class FakeQuant(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale, zero_point, levels):
            grid = torch.addcmul(zero_point, x, 1.0 / scale)
            grid.round_()
            out = grid.clamp(0, levels)
            inside = grid.eq_(out)  # 1.0 where not clamped, in grid's memory
            out.sub_(zero_point).mul_(scale)
            ctx.save_for_backward(inside)
            return out

        @staticmethod
        def backward(ctx, grad):
            (inside,) = ctx.saved_tensors
            return grad * inside, None, None, None

    return FakeQuant


def _symmetric_fake_quant(value, bound, num_bits: int, axis: int | None):
    """Narrow-range symmetric `_fake_quant` on [-bound, bound] (per channel of the last
    axis when `axis` is -1). On PyTorch, torch's fused per-tensor / per-channel op on
    the same grid (integers -127..127 times bound / 127): as for activations, Keras's
    generic version spends a dozen passes on range gradients; TensorFlow's FakeQuant
    passes none to a range no weight lies outside, and neither does this."""
    if not _is_torch_tensor(value):
        kwargs = {"axis": -1} if axis is not None else {}
        return _fake_quant(value, -bound, bound, num_bits=num_bits, narrow_range=True, **kwargs)
    import torch

    top = 2 ** (num_bits - 1) - 1
    scale = (ops.cast(bound, "float32") / top).detach()
    x = value.float()
    if axis is None:
        zero = torch.zeros((1,), dtype=torch.int32, device=x.device)
        out = torch.fake_quantize_per_tensor_affine(x, torch.reshape(scale, (1,)), zero,
                                                    -top, top)
    else:
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
        out = torch.fake_quantize_per_channel_affine(x, scale, zero, x.dim() - 1, -top, top)
    return out.to(value.dtype)


def _min_max(x):
    """The tensor's min and max: one pass on PyTorch (aminmax), two elsewhere."""
    if _is_torch_tensor(x):
        import torch

        return torch.aminmax(x)
    return ops.min(x), ops.max(x)


def _is_torch_tensor(x) -> bool:
    """A concrete PyTorch tensor (the torch backend, not a symbolic KerasTensor)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return isinstance(x, torch.Tensor)

#: `axis` value for depthwise kernels (h, w, in, multiplier): LiteRT quantizes
#: their in * multiplier output channels, so the last two axes are one channel axis.
DEPTHWISE = "depthwise"


@keras.saving.register_keras_serializable(package="kmot")
class FakeQuantTransform(WeightTransform):
    """Symmetric, narrow-range fake quantization of a weight (LiteRT's int8 weights).

    The range is the weight's current max |w| (per output channel with `axis`),
    so the values trained are the values the int8 file stores.

    Args:
        num_bits: weight bits (8 for LiteRT int8 and int16x8).
        axis: None (per-tensor), the output-channel axis, or `DEPTHWISE`.
    """

    simulates_deployment = True  # the converter quantizes the weight itself

    def __init__(self, num_bits: int = 8, axis: int | str | None = None):
        self.num_bits = num_bits
        self.axis = axis

    def _channels_last(self, value):
        """`value` with its output channels as the last axis (one axis for `DEPTHWISE`)."""
        if self.axis == DEPTHWISE:
            shape = tuple(value.shape)
            return ops.reshape(value, shape[:-2] + (shape[-2] * shape[-1],))
        if self.axis in (-1, len(value.shape) - 1):
            return value
        return ops.moveaxis(value, self.axis, -1)

    def _restore(self, flat, shape):
        if self.axis == DEPTHWISE:
            return ops.reshape(flat, shape)
        if self.axis in (-1, len(shape) - 1):
            return flat
        return ops.moveaxis(flat, -1, self.axis)

    def _channels_last_and_bounds(self, value):
        flat = self._channels_last(value)
        return flat, _abs_max(flat, tuple(range(len(flat.shape) - 1)))

    def bounds(self, value):
        """The grid's ends (+-bound, in steps of bound / (2**(num_bits - 1) - 1)) that
        `value` is quantized on: max |value|, one per output channel with `axis`."""
        if self.axis is None:
            return _abs_max(value, None)
        return self._channels_last_and_bounds(value)[1]

    def __call__(self, value, *, training):
        if self.axis is None:
            return _symmetric_fake_quant(value, self.bounds(value), self.num_bits, None)
        flat, bound = self._channels_last_and_bounds(value)
        return self._restore(_symmetric_fake_quant(flat, bound, self.num_bits, -1),
                             tuple(value.shape))

    def get_config(self) -> dict[str, Any]:
        return {"num_bits": self.num_bits, "axis": self.axis}


def _abs_max(value, axes):
    """max |value| over `axes` (all with None), at least 1e-8: a weight's grid. On
    PyTorch out of autograd, as the fused ops take the grid as a constant."""
    if _is_torch_tensor(value):
        import torch

        with torch.no_grad():
            magnitude = value.detach().abs()
            top = magnitude.amax() if axes is None else magnitude.amax(dim=axes)
            return top.clamp_(min=1e-8)
    return ops.maximum(ops.max(ops.abs(value), axis=axes), 1e-8)


def _integer_zero_point(lo, hi, num_bits: int):
    """A range on which TensorFlow's FakeQuant and the LiteRT converter agree.

    FakeQuant nudges the zero point of a range to an integer in float32, the
    converter in double: for a range like [-1, 1] (zero point 127.5) the two
    round it apart, and with data on [-1, 1] (MobileNet's preprocessing) every
    input is a tie the two roundings break differently. Here the scale grows just
    enough (at most 1/zero-point, under 1% for most ranges) for the range's
    minimum to be a grid point with an integer zero point, the maximum still
    covered: both then compute the same grid, and the data's extremes are exact.
    """
    xp = (_TorchScalars if _is_torch_tensor(lo) else np if isinstance(lo, np.floating)
          else ops)
    levels = 2.0 ** num_bits - 1
    # (+1e-4: an integer computed as k - epsilon; clipped, a range not reaching below 0
    # has zero point 0). About 20 ops: traced once per quantizer in every graph (fit,
    # predict, export), this math was most of a quantizer's tracing time.
    zero_point = xp.clip(xp.floor(-lo * levels / xp.maximum(hi - lo, 1e-8) + 1e-4), 0.0, levels)
    scale = xp.where(xp.greater_equal(zero_point, 1.0), -lo / xp.maximum(zero_point, 1.0),
                     xp.maximum(hi, 1e-8) / levels)
    return -zero_point * scale, (levels - zero_point) * scale


#: A learned grid's ends are scaled by this (its step by 0.1%, its zero point kept), so
#: that no data sits on the grid's rounding ties. Discrete data often does: pixels
#: ``p / 127.5 - 1`` through a range whose ends are data values, the digits' 17 levels.
#: Ties are where the simulation and LiteRT part: FakeQuant rounds ``x - min`` half
#: up, LiteRT's QUANTIZE ``x / scale`` half away from zero (XNNPACK's, and ONNX's
#: QuantizeLinear, half to even). Off the ties, a value sits at least ``|x / scale| *
#: 2**-10`` (half a thousandth of a step) from one, ten times the float error of
#: either computation, so all round it alike. The converter reads these ends: the file
#: holds this grid. (Ties between codes a mean of codes makes, as an average pool's,
#: stay: that output shares its input's grid.)
_OFF_THE_DATA_GRID = 1.0 + 2.0 ** -10


class _TorchScalars:
    """The keras.ops the range math takes, as torch calls that take Python floats as
    they are (keras.ops first makes each float a tensor: a few small ops apiece, which
    added up to a tenth of a QAT step on a small net)."""

    @staticmethod
    def maximum(a, b):
        import torch

        return torch.clamp(a, min=b) if isinstance(b, float) else torch.maximum(a, b)

    @staticmethod
    def minimum(a, b):
        import torch

        return torch.clamp(a, max=b) if isinstance(b, float) else torch.minimum(a, b)

    @staticmethod
    def equal(a, b):
        return a == b

    @staticmethod
    def clip(a, low, high):
        import torch

        return torch.clamp(a, low, high)

    @staticmethod
    def greater_equal(a, b):
        return a >= b

    @staticmethod
    def floor(a):
        import torch

        return torch.floor(a)

    @staticmethod
    def where(condition, a, b):
        import torch

        return torch.where(condition, a, b)


@keras.saving.register_keras_serializable(package="kmot")
class ActivationQuantizer(keras.layers.Layer):
    """Asymmetric fake quantization of a tensor with a moving-average range.

    The first training batch sets the range; later batches move it by
    ``1 - ema_decay``. The range always contains 0 (so zero is exact). A
    `fixed_range` (e.g. softmax's [0, 255/256], LiteRT's fixed output scale)
    is never learned. A learned range's grid is a thousandth wider than the range
    (`_OFF_THE_DATA_GRID`), so that discrete data rounds in Keras as in LiteRT.

    Args:
        num_bits: 8 (int8) or 16.
        ema_decay: weight of the old range at each training step.
        fixed_range: ``(min, max)`` to use instead of a learned range.
        symmetric: a range ``[-m, m * 127/128]`` (zero point 0), for ops whose
            int8 kernels need a zero-centred input (L2_NORMALIZATION).

    Example:
        >>> q = ActivationQuantizer()
        >>> y = q(keras.ops.ones((2, 3)), training=True)
    """

    simulates_deployment = True  # the converter reads its range: no calibration

    def __init__(self, num_bits: int = 8, ema_decay: float = 0.99,
                 fixed_range: tuple[float, float] | None = None, symmetric: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_bits = num_bits
        self.ema_decay = ema_decay
        self.fixed_range = tuple(fixed_range) if fixed_range is not None else None
        self.symmetric = symmetric
        self.supports_masking = True
        object.__setattr__(self, "_dither", None)  # a SeedGenerator while rounding is randomised
        object.__setattr__(self, "_grid", None)  # a fixed range's, once computed

    def build(self, input_shape=None):
        lo, hi = self.fixed_range or (-6.0, 6.0)
        self.range_min = self.add_weight(name="range_min", shape=(), trainable=False,
                                         initializer=keras.initializers.Constant(lo))
        self.range_max = self.add_weight(name="range_max", shape=(), trainable=False,
                                         initializer=keras.initializers.Constant(hi))
        self.initialized = self.add_weight(name="initialized", shape=(), trainable=False,
                                           initializer="zeros")

    def call(self, x, training=None, observe=True):
        """`x` on the range's grid. ``observe=False``: a second use of this grid (a
        tensor LiteRT writes at another tensor's scale), which does not move the
        range; Keras passes the model's `training` to every layer of a graph, so an
        explicit ``training=False`` would not stop it."""
        if _is_torch_tensor(x):
            import torch

            with torch.no_grad():  # the range trains no weight: no graph for it
                lo, hi = self._range(x.detach(), training and observe, _TorchScalars)
        else:  # (stop_gradient: as on torch, no gradient through the batch's min and max)
            lo, hi = self._range(ops.stop_gradient(x), training and observe, ops)
        if self._dither is not None:  # see kmot.quantization.rounding_noise_floor
            step = (hi - lo) / (2.0 ** self.num_bits - 1)
            x = x + keras.random.uniform(ops.shape(x), -0.5, 0.5, seed=self._dither) * step
        return _fake_quant_tensor(x, lo, hi, self.num_bits)

    def grid(self):
        """The ends of the grid the quantizer rounds onto now (not observing): its
        range made symmetric if asked, with an integer zero point, as LiteRT stores
        it. The step is ``(hi - lo) / (2**num_bits - 1)``."""
        return self._range(None, False, ops)

    def _range(self, x, observe: bool, xp):
        """The grid's ends: the range (moved by `x`'s when observing), made symmetric
        if asked, with an integer zero point. `xp` does the element-wise math."""
        if self.fixed_range is not None:  # (tensors: they mix with tensors as before)
            return tuple(ops.convert_to_tensor(end) for end in self._fixed_grid())
        lo, hi = self.range_min.value, self.range_max.value
        if observe:
            x_lo, x_hi = _min_max(x)
            batch_lo = xp.minimum(global_min(x_lo), 0.0)  # the whole batch's,
            batch_hi = xp.maximum(global_max(x_hi), 0.0)  # also under tf.distribute
            fresh = xp.equal(self.initialized.value, 0.0)
            d = self.ema_decay
            lo = xp.where(fresh, batch_lo, d * lo + (1 - d) * batch_lo)
            hi = xp.where(fresh, batch_hi, d * hi + (1 - d) * batch_hi)
            self.range_min.assign(lo)
            self.range_max.assign(hi)
            self.initialized.assign(1.0)
        lo, hi = self._ends(lo, hi, xp)
        return lo * _OFF_THE_DATA_GRID, hi * _OFF_THE_DATA_GRID

    def _ends(self, lo, hi, xp):
        """The range made symmetric if asked, with an integer zero point."""
        if self.symmetric:
            bound = xp.maximum(-lo, hi)
            levels = 2.0 ** (self.num_bits - 1)
            lo, hi = -bound, bound * (levels - 1) / levels
        return _integer_zero_point(lo, hi, self.num_bits)

    def _fixed_grid(self):
        """A fixed range's grid, as NumPy float32 scalars computed once: the same math
        on constants, not widened (a fixed scale is LiteRT's: kept exact). (In the
        graph it was about 20 ops per call, traced in every graph: a quantized GRU
        step calls its sigmoid and tanh quantizers three times.) NumPy's float32
        arithmetic rounds as the backends' does, so the ends are the same bits."""
        if self._grid is None:
            lo, hi = self._ends(np.float32(self.fixed_range[0]), np.float32(self.fixed_range[1]), np)
            object.__setattr__(self, "_grid", (np.float32(lo), np.float32(hi)))
        return self._grid

    def compute_output_shape(self, input_shape):
        return input_shape

    def summaries(self) -> dict[str, float]:
        """The learned range, for `QuantizationSummaries`."""
        return {"range_min": float(ops.convert_to_numpy(self.range_min.value)),
                "range_max": float(ops.convert_to_numpy(self.range_max.value))}

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "ema_decay": self.ema_decay,
                "fixed_range": list(self.fixed_range) if self.fixed_range else None,
                "symmetric": self.symmetric}
