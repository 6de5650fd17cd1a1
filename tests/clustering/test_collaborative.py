"""Collaborative optimization: what pruning and clustering put in the weights,
quantization-aware training keeps, all the way into the int8 file."""

import keras
import numpy as np
import pytest

from kmot import clustering, sparsity
from kmot.core import find_wrappers, strip
from kmot.errors import TransformError
from kmot.export import inspect, to_litert
from kmot.quantization import FakeQuantTransform, quantize_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits")])


def _fit(model, data, epochs=1):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(data[0][:768], data[1][:768], batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def stripped(digits_data):
    pruned = _fit(sparsity.prune_low_magnitude(
        _model(), pruning_schedule=sparsity.ConstantSparsity(0.7, 0, frequency=1)), digits_data)
    pruned = sparsity.strip_pruning(pruned)
    clustered = clustering.strip_clustering(_fit(clustering.cluster_weights(
        _model(), number_of_clusters=8), digits_data))
    both = clustering.strip_clustering(_fit(clustering.cluster_weights(
        pruned, number_of_clusters=8, preserve_sparsity=True), digits_data))
    return {"pruned": pruned, "clustered": clustered, "both": both}


def _kernels(content):
    return [w for w in inspect(content).weights if not w.is_bias]


def test_pqat_keeps_the_zeros(stripped, digits_data):
    qat = _fit(quantize_model(stripped["pruned"], preserve_sparsity=True), digits_data)
    before = {l.name: l.kernel.numpy() == 0 for l in stripped["pruned"].layers if hasattr(l, "kernel")}
    after = {w.layer.name: np.asarray(w.transformed_value(w.layer.kernel)) == 0 for w in find_wrappers(qat)}
    for name, zeros in before.items():
        assert np.all(after[name][zeros])  # every pruned zero is still zero
    for w in _kernels(to_litert(qat)):
        assert w.sparsity >= 50 / 72 - 1e-9  # round(0.7 * n) zeros; the conv has 72 weights


def test_cqat_keeps_the_clusters(stripped, digits_data):
    qat = _fit(quantize_model(stripped["clustered"], preserve_clusters=True), digits_data)
    content = to_litert(qat)
    assert inspect(content).float_ops_between_io() == []
    for w in _kernels(content):
        assert w.max_unique_per_channel <= 8


def test_pcqat_keeps_both(stripped, digits_data):
    qat = _fit(quantize_model(stripped["both"], preserve_sparsity=True, preserve_clusters=True),
               digits_data)
    for w in _kernels(to_litert(qat)):
        assert w.max_unique_per_channel <= 8  # the zero is one of the 8
        assert w.sparsity >= 50 / 72 - 1e-9  # round(0.7 * n) zeros; the conv has 72 weights


def test_without_preservation_fine_tuning_moves_them(stripped, digits_data):
    qat = _fit(quantize_model(stripped["clustered"]), digits_data)
    assert max(w.max_unique_per_channel for w in _kernels(to_litert(qat))) > 8


def test_partial_strip_keeps_the_tail_with_its_state(stripped, digits_data):
    qat = _fit(quantize_model(stripped["both"], preserve_sparsity=True, preserve_clusters=True),
               digits_data)
    x = digits_data[2][:16]
    baked = strip(qat, transforms=lambda t: not isinstance(t, FakeQuantTransform))
    for wrapper in find_wrappers(baked):
        assert all(isinstance(t, FakeQuantTransform) for c in wrapper.transforms.values() for t in c)
    np.testing.assert_allclose(baked.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(TransformError, match=r"the transforms kept must come after the ones stripped"):
        strip(qat, transforms=lambda t: isinstance(t, FakeQuantTransform))
