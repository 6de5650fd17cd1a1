"""Mask computations (keras.ops only): magnitude, block and N:M patterns.

Each returns a 0/1 mask of the weight's shape and dtype. Scores are the
magnitudes of the currently masked weights, so a pruned weight (score 0) is never
revived. Exactly ``round(sparsity * n)`` units are pruned: ranks, not a magnitude
threshold, decide, so ties (e.g. clustered values) cannot over-prune.
"""

from __future__ import annotations

from keras import ops

__all__ = ["magnitude_mask", "block_mask", "n_of_m_mask"]


def _keep_top(scores, sparsity):
    """1 for the highest-scoring units of a flat score vector, 0 for the rest."""
    n = int(scores.shape[0])
    k = ops.cast(ops.round(ops.cast(sparsity, "float32") * n), "int32")
    ranks = ops.argsort(ops.argsort(scores))  # 0 = smallest
    return ops.cast(ops.greater_equal(ranks, k), scores.dtype)


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
