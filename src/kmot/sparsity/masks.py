"""Mask computations (keras.ops only): magnitude, block and N:M patterns.

Each returns a 0/1 mask of the weight's shape and dtype. Scores are the
magnitudes of the currently masked weights, so a pruned weight (score 0) is never
revived. Exactly ``round(sparsity * n)`` units are pruned: ranks, not a magnitude
threshold, decide, so ties (e.g. clustered values) cannot over-prune.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["magnitude_mask", "block_mask", "n_of_m_mask"]


def _keep_top(scores, sparsity):
    """1 for the highest-scoring units of a flat, non-negative score vector, 0 for the
    ``round(sparsity * n)`` lowest; among equal scores the lower index goes first.

    The k-th smallest score is found by bisection on its bits (a non-negative
    float32 orders as its int32 bit pattern): a loop of 31 counting passes over the vector,
    where ranking it took two argsorts, 7x (TensorFlow) to 50x (JAX) slower on a
    4096x128 kernel. The result is the same mask as a stable ranking.
    """
    n = int(scores.shape[0])
    k = ops.cast(ops.round(ops.cast(sparsity, "float32") * n), "int32")
    bits = ops.view(ops.cast(scores, "float32"), "int32")
    lo = _kth_smallest_eager(bits, k) if keras.backend.backend() == "torch" else None
    if lo is None:
        def halve(_, bounds):  # the smallest v with at least k scores <= v
            lo, hi = bounds
            mid = lo + (hi - lo) // 2
            enough = ops.greater_equal(ops.sum(ops.cast(ops.less_equal(bits, mid), "int32")), k)
            return ops.where(enough, lo, mid + 1), ops.where(enough, mid, hi)

        # A loop op, not 31 unrolled passes: traced once, where unrolling put ~250 ops a
        # kernel in the training graph (tracing NASNetMobile's took 112 s).
        lo, _ = ops.fori_loop(0, 31, halve, (ops.zeros((), "int32"),
                                             ops.full((), 2**31 - 1, "int32")))
    below, ties = ops.less(bits, lo), ops.equal(bits, lo)
    need = k - ops.sum(ops.cast(below, "int32"))  # how many of the ties to prune
    tie_rank = ops.cumsum(ops.cast(ties, "int32"))
    pruned = ops.logical_or(below, ops.logical_and(ties, ops.less_equal(tie_rank, need)))
    return ops.cast(ops.logical_not(pruned), scores.dtype)


def _kth_smallest_eager(bits, k):
    """PyTorch runs eagerly, where 31 passes cost 31 Python round trips of several ops:
    its selection kernel gives the same value in one (0 when nothing is pruned)."""
    import torch

    if not isinstance(bits, torch.Tensor) or isinstance(k, keras.KerasTensor):
        return None
    count = int(k)
    if count <= 0:
        return ops.zeros((), "int32")
    return torch.kthvalue(bits, count).values


def magnitude_mask(weight, sparsity):
    """Keeps the largest-magnitude ``1 - sparsity`` fraction of `weight`."""
    scores = ops.reshape(ops.abs(weight), (-1,))
    return ops.reshape(_keep_top(scores, sparsity), weight.shape)


def block_mask(weight, sparsity, block_size, pooling="AVG"):
    """Prunes whole (r, c) blocks of the weight viewed as (-1, last_dim).

    Blocks are scored by the mean (``"AVG"``) or max (``"MAX"``) magnitude; edge
    blocks that do not fill a whole block are padded with zeros for scoring.
    """
    r, c = block_size
    shape = weight.shape
    cols = int(shape[-1])
    rows = 1
    for d in shape[:-1]:
        rows *= int(d)
    view = ops.reshape(ops.abs(weight), (rows, cols))
    pr, pc = (-rows) % r, (-cols) % c
    if pr or pc:
        view = ops.pad(view, ((0, pr), (0, pc)))
    R, C = (rows + pr) // r, (cols + pc) // c
    blocks = ops.reshape(view, (R, r, C, c))
    pooled = ops.max(blocks, axis=(1, 3)) if pooling == "MAX" else ops.mean(blocks, axis=(1, 3))
    keep = ops.reshape(_keep_top(ops.reshape(pooled, (-1,)), sparsity), (R, C))
    full = ops.repeat(ops.repeat(keep, r, axis=0), c, axis=1)[:rows, :cols]
    return ops.reshape(ops.cast(full, weight.dtype), shape)


def n_of_m_mask(weight, n, m, axis=-2):
    """Keeps the `n` largest of every `m` consecutive weights along `axis`.

    `axis` is the input-channel axis (-2 for Dense and ConvND kernels), which is
    the axis sparse kernels (e.g. 2:4) group along; its size must divide by `m`.
    """
    moved = ops.moveaxis(ops.abs(weight), axis, -1)
    moved_shape = moved.shape
    groups = ops.reshape(moved, (-1, m))
    ranks = ops.argsort(ops.argsort(groups, axis=-1), axis=-1)
    keep = ops.cast(ops.greater_equal(ranks, m - n), weight.dtype)
    return ops.moveaxis(ops.reshape(keep, moved_shape), -1, axis)
