"""Magnitude masks prune exactly round(sparsity * n) weights, the smallest first, ties by
index: the same mask as a stable ranking, on every backend."""

import numpy as np
import pytest
from keras import ops

from kmot.sparsity.masks import block_mask, magnitude_mask


def ranked(weight, sparsity):
    """The reference: a stable ranking of |w| (numpy)."""
    flat = np.abs(weight).ravel()
    k = int(np.round(np.float32(sparsity) * flat.size))
    mask = np.ones(flat.size, "float32")
    mask[np.argsort(flat, kind="stable")[:k]] = 0
    return mask.reshape(weight.shape)


@pytest.mark.parametrize("values", ["random", "ties", "zeros_and_signs"])
def test_magnitude_mask_equals_a_stable_ranking(values):
    rng = np.random.default_rng(0)
    for trial in range(6):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 9)))
        if values == "random":
            w = rng.normal(size=shape)
        elif values == "ties":  # clustered weights: few distinct values
            w = rng.choice([-0.5, 0.25, 0.5, 1.0], size=shape)
        else:
            w = rng.choice([0.0, -0.0, 1e-30, -2.0, 2.0, np.inf], size=shape)
        w = w.astype("float32")
        for sparsity in (0.0, 0.37, 0.5, 0.8, 1.0, float(rng.random())):
            got = ops.convert_to_numpy(magnitude_mask(ops.convert_to_tensor(w), sparsity))
            np.testing.assert_array_equal(got, ranked(w, sparsity), err_msg=f"{w}, {sparsity}")


def test_a_large_kernel_is_pruned_to_the_exact_count():
    w = np.random.default_rng(1).normal(size=(4096, 128)).astype("float32")
    got = ops.convert_to_numpy(magnitude_mask(ops.convert_to_tensor(w), 0.8))
    assert got.sum() == w.size - round(0.8 * w.size)
    assert np.abs(w[got == 0]).max() <= np.abs(w[got == 1]).min()


def test_block_mask_prunes_whole_blocks_by_their_mean():
    w = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
    got = ops.convert_to_numpy(block_mask(ops.convert_to_tensor(w), 0.5, (2, 3)))
    blocks = got.reshape(4, 2, 2, 3)
    assert {float(v) for v in np.unique(blocks.mean(axis=(1, 3)))} == {0.0, 1.0}
    assert got.sum() == w.size / 2
    scores = np.abs(w).reshape(4, 2, 2, 3).mean(axis=(1, 3))
    kept = blocks.mean(axis=(1, 3)) == 1
    assert scores[~kept].max() <= scores[kept].min()
