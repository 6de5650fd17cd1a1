import keras
import numpy as np
import pytest

from kmot import sparsity
from kmot.core import OptimizedLayer, find_wrappers, walk_layers
from kmot.errors import LayerSelectionError, TransformError
from kmot.export import check_tflite_pattern, inspect, to_litert

CONST_HALF = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)

# (layer factory, input shape, integer inputs?)
LAYERS = [
    (lambda: keras.layers.Dense(16), (12,), False),
    (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=16, bias_axes="c"), (12,), False),
    (lambda: keras.layers.Conv1D(8, 3), (10, 4), False),
    (lambda: keras.layers.Conv2D(8, 3), (6, 6, 4), False),
    (lambda: keras.layers.Conv3D(4, 2), (4, 4, 4, 2), False),
    (lambda: keras.layers.Conv1DTranspose(8, 3), (6, 4), False),
    (lambda: keras.layers.Conv2DTranspose(8, 3), (5, 5, 4), False),
    (lambda: keras.layers.Conv3DTranspose(4, 2), (3, 3, 3, 2), False),
    (lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=4), (10, 4), False),
    (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=4), (6, 6, 4), False),
    (lambda: keras.layers.SeparableConv1D(8, 3, depth_multiplier=4), (10, 4), False),
    (lambda: keras.layers.SeparableConv2D(8, 3, depth_multiplier=4), (6, 6, 4), False),
    (lambda: keras.layers.Embedding(50, 8), (5,), True),
]


def _model(make_layer, shape, integer):
    inp = keras.Input(shape, dtype="int32" if integer else "float32")
    h = make_layer()(inp)
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h))
    return keras.Model(inp, out)


def _data(model, n=16):
    rng = np.random.default_rng(0)
    spec = model.inputs[0]
    if "int" in str(spec.dtype):
        x = rng.integers(0, 50, size=(n, *spec.shape[1:]))
    else:
        x = rng.normal(size=(n, *spec.shape[1:])).astype("float32")
    return x, rng.normal(size=(n, 2)).astype("float32")


@pytest.mark.parametrize("make_layer, shape, integer", LAYERS,
                         ids=[type(m()).__name__ for m, _, _ in LAYERS])
def test_each_prunable_layer_reaches_its_target(make_layer, shape, integer):
    model = _model(make_layer, shape, integer)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=CONST_HALF)
    pruned.compile("adam", "mse")
    pruned.fit(*_data(model), batch_size=8, epochs=2, verbose=0)
    report = sparsity.summary(pruned)
    assert len(report.weights) >= 2  # the layer's kernel(s) and the head
    for w in report.weights:
        assert abs(w.sparsity - 0.5) <= 0.01, (w.layer, w.weight, w.sparsity)
    # Only kernels carry a mask: biases are never pruned.
    for wrapper in find_wrappers(pruned):
        assert all("kernel" in key or key == "embeddings" for key in wrapper.transforms)


def test_custom_layer_protocol_and_passthrough():
    class Scaled(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 6), name="w")
            self.gain = self.add_weight(shape=(), initializer="ones", name="gain")

        def call(self, x):
            return keras.ops.matmul(x, self.w) * self.gain

        def get_prunable_weights(self):
            return [self.w]

    inp = keras.Input((10,))
    model = keras.Model(inp, Scaled(name="custom")(keras.layers.BatchNormalization(name="bn")(inp)))
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=CONST_HALF)
    assert [w.layer.name for w in find_wrappers(pruned)] == ["custom"]
    assert list(find_wrappers(pruned)[0].transforms) == ["w"]
    pruned.compile("adam", "mse")
    pruned.fit(np.random.rand(8, 10), np.random.rand(8, 6), verbose=0)
    assert sparsity.summary(pruned).weights[0].sparsity == pytest.approx(0.5, abs=0.01)


def test_named_layer_without_weights_is_an_error():
    model = _model(lambda: keras.layers.Dense(4, name="d"), (3,), False)
    flatten = next(l.name for l in walk_layers(model) if isinstance(l, keras.layers.Flatten))
    with pytest.raises(LayerSelectionError, match=rf"Layer '{flatten}' \(Flatten\) has no prunable weights.*get_prunable_weights"):
        sparsity.prune_low_magnitude(model, pruning_schedule=CONST_HALF, layers=[flatten])
    with pytest.raises(LayerSelectionError, match=r"selects no layer.*Received: layers='nope'"):
        sparsity.prune_low_magnitude(model, pruning_schedule=CONST_HALF, layers="nope")


@pytest.mark.parametrize("kwargs, message", [
    ({"pruning_schedule": 0.5}, r"`pruning_schedule` must be a kmot.sparsity schedule.*Received: pruning_schedule=0.5"),
    ({"pruning_schedule": CONST_HALF, "block_size": (0, 2)}, r"`block_size` must be two ints >= 1"),
    ({"pruning_schedule": CONST_HALF, "block_pooling_type": "SUM"}, r"must be 'AVG' or 'MAX'"),
    ({"pruning_schedule": CONST_HALF, "sparsity_m_by_n": (4, 2)}, r"0 < n < m"),
    ({"pruning_schedule": CONST_HALF, "sparsity_m_by_n": (2, 4), "block_size": (2, 2)}, r"choose one"),
    ({"pruning_schedule": CONST_HALF, "sparsity_allocation": "layerwise"}, r"'uniform' or 'global'"),
    ({"pruning_schedule": CONST_HALF, "sparsity_m_by_n": (2, 4), "sparsity_allocation": "global"}, r"Use one of them"),
])
def test_bad_arguments_are_named(kwargs, message):
    model = _model(lambda: keras.layers.Dense(8), (8,), False)
    with pytest.raises(TransformError, match=message):
        sparsity.prune_low_magnitude(model, **kwargs)


def _digits_pruned(digits_data, schedule, **kwargs):
    keras.utils.set_random_seed(0)
    base = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits")])
    pruned = sparsity.prune_low_magnitude(base, pruning_schedule=schedule, **kwargs)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return base, pruned


def test_pruned_weights_stay_zero_through_training(digits_data):
    x, y = digits_data[0], digits_data[1]
    schedule = sparsity.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=20, frequency=5)
    _, pruned = _digits_pruned(digits_data, schedule)
    pruned.fit(x[:672], y[:672], batch_size=32, epochs=1, verbose=0)  # steps 0..20: the end
    before = [keras.ops.convert_to_numpy(w.transformed_value(w.layer.kernel)) == 0 for w in find_wrappers(pruned)]
    pruned.fit(x, y, batch_size=32, epochs=2, verbose=0)
    after = [keras.ops.convert_to_numpy(w.transformed_value(w.layer.kernel)) == 0 for w in find_wrappers(pruned)]
    for b, a in zip(before, after):
        assert b.mean() == pytest.approx(0.7, abs=0.01)
        np.testing.assert_array_equal(a, b)


def test_strip_gives_plain_layers_with_positive_zeros(digits_data):
    x, y = digits_data[0], digits_data[1]
    _, pruned = _digits_pruned(digits_data, CONST_HALF)
    pruned.fit(x[:256], y[:256], batch_size=32, verbose=0)
    final = sparsity.strip_pruning(pruned)
    assert not find_wrappers(final)
    assert [type(l) for l in final.layers] == [type(l.layer) if isinstance(l, OptimizedLayer) else type(l)
                                               for l in pruned.layers]
    np.testing.assert_allclose(final.predict(x[:32], verbose=0), pruned.predict(x[:32], verbose=0), atol=1e-5)
    kernel = final.get_layer("hidden").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)
    assert not np.signbit(kernel[kernel == 0]).any()  # +0.0 only: -0.0 compresses worse
    again = sparsity.strip_pruning(final)
    np.testing.assert_array_equal(again.get_layer("hidden").kernel.numpy(), kernel)


def test_strip_nested_model(digits_data):
    inner = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name="inner_dense")], name="inner")
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Dense(10, name="out")(inner(keras.layers.Flatten()(inp))))
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=CONST_HALF)
    assert sorted(w.layer.name for w in find_wrappers(pruned)) == ["inner_dense", "out"]
    pruned.compile("adam", "mse")
    pruned(digits_data[0][:4], training=True)
    final = sparsity.strip_pruning(pruned)
    assert not find_wrappers(final)
    assert np.mean(final.get_layer("inner").get_layer("inner_dense").kernel.numpy() == 0) == pytest.approx(0.5, abs=0.01)


def test_custom_training_loop_advances_the_step(digits_data):
    import tensorflow as tf

    x, y = digits_data[0][:64], digits_data[1][:64]
    schedule = sparsity.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=4, frequency=2)
    _, pruned = _digits_pruned(digits_data, schedule)
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(5):  # steps 0..4
        with tf.GradientTape() as tape:
            loss = loss_fn(y, pruned(x, training=True))
        optimizer.apply(tape.gradient(loss, pruned.trainable_variables), pruned.trainable_variables)
    transforms = [t for w in find_wrappers(pruned) for c in w.transforms.values() for t in c]
    assert {int(t.step.numpy()) for t in transforms} == {4}
    assert sparsity.summary(pruned).overall == pytest.approx(0.6, abs=0.01)
    pruned(x)  # inference does not advance the step
    assert {int(t.step.numpy()) for t in transforms} == {4}


def test_update_pruning_step_rejects_unpruned_model(digits_data):
    base, _ = _digits_pruned(digits_data, CONST_HALF)
    base.compile("adam", "mse")
    with pytest.raises(TransformError, match=r"UpdatePruningStep is attached to a model with no pruned layer"):
        base.fit(digits_data[0][:8], np.zeros((8, 10)), callbacks=[sparsity.UpdatePruningStep()], verbose=0)


def test_resume_from_keras_file_keeps_step_and_masks(digits_data, tmp_path):
    x, y = digits_data[0][:512], digits_data[1][:512]
    schedule = sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=40, frequency=4)
    _, pruned = _digits_pruned(digits_data, schedule)
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)  # 16 steps
    path = tmp_path / "mid.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(find_wrappers(pruned), find_wrappers(loaded)):
        ta, tb = a.transforms["kernel"][0], b.transforms["kernel"][0]
        assert int(tb.step.numpy()) == int(ta.step.numpy()) == 15
        np.testing.assert_array_equal(tb.mask.numpy(), ta.mask.numpy())
        assert tb.schedule.get_config() == ta.schedule.get_config()
    loaded.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)  # to step 47 > end
    assert sparsity.summary(loaded).overall == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_zeros_survive_export(digits_data, quantize):
    x, y = digits_data[0], digits_data[1]
    _, pruned = _digits_pruned(digits_data, sparsity.ConstantSparsity(0.75, 0, frequency=1))
    pruned.fit(x[:256], y[:256], batch_size=32, verbose=0)
    final = sparsity.strip_pruning(pruned)
    info = inspect(to_litert(final, quantize=quantize, representative_data=x))
    kernels = [w for w in info.weights if not w.is_bias]
    assert len(kernels) == 3
    for w in kernels:
        assert w.sparsity >= 0.75 - 0.01, (w.name, w.sparsity)
    # Exporting the wrapped model directly keeps them too.
    info = inspect(to_litert(pruned, quantize=quantize, representative_data=x))
    assert all(w.sparsity >= 0.74 for w in info.weights if not w.is_bias)


def test_two_of_four_pattern_in_keras_and_tflite(digits_data):
    x, y = digits_data[0], digits_data[1]
    with pytest.warns(UserWarning, match=r"2:4 sparsity skipped 1 layer\(s\).*conv \(1 input channels"):
        _, pruned = _digits_pruned(digits_data, CONST_HALF, sparsity_m_by_n=(2, 4))
    pruned.fit(x[:256], y[:256], batch_size=32, verbose=0)
    final = sparsity.strip_pruning(pruned)
    kernel = final.get_layer("hidden").kernel.numpy()  # (in, out): groups along "in"
    groups = (kernel != 0).T.reshape(-1, 4).sum(axis=1)
    assert groups.max() <= 2 and groups.mean() == pytest.approx(2.0)
    for quantize in (None, "int8"):
        content = to_litert(final, quantize=quantize, representative_data=x)
        checks = check_tflite_pattern(content, sparsity_m_by_n=(2, 4))
        fc = [c for c in checks if c.op == "FULLY_CONNECTED"]
        assert len(fc) == 2 and all(c.ok for c in fc)
        # The conv has 1 input channel: no 4-group to check, so it is not listed.
        assert not [c for c in checks if c.op == "CONV_2D"]


def test_two_of_four_on_a_named_incompatible_layer_is_an_error(digits_data):
    with pytest.raises(TransformError, match=r"Layer 'conv' cannot take 2:4 sparsity: 1 input channels"):
        _digits_pruned(digits_data, CONST_HALF, sparsity_m_by_n=(2, 4), layers=["conv", "hidden"])


def test_block_sparsity(digits_data):
    x, y = digits_data[0], digits_data[1]
    _, pruned = _digits_pruned(digits_data, CONST_HALF, block_size=(4, 2), layers="hidden")
    pruned.fit(x[:256], y[:256], batch_size=32, verbose=0)
    final = sparsity.strip_pruning(pruned)
    kernel = final.get_layer("hidden").kernel.numpy()  # (288, 32)
    blocks = (kernel != 0).reshape(72, 4, 16, 2).sum(axis=(1, 3))
    assert set(np.unique(blocks)) <= {0, 8}
    assert np.mean(blocks == 0) == pytest.approx(0.5, abs=0.01)
    checks = check_tflite_pattern(to_litert(final), block_size=(4, 2))
    assert next(c for c in checks if c.shape == (32, 288)).ok


def test_global_allocation_spares_small_layers(digits_data):
    x = digits_data[0]
    schedule = sparsity.ConstantSparsity(0.8, 0, frequency=1)
    _, pruned = _digits_pruned(digits_data, schedule, sparsity_allocation="global")
    pruned(x[:32], training=True)
    report = {w.layer: w.sparsity for w in sparsity.summary(pruned).weights}
    assert sparsity.summary(pruned).overall == pytest.approx(0.8, abs=0.005)
    assert report["conv"] < report["hidden"]  # 72 weights vs 9,216
    assert max(report.values()) <= 0.98 + 1e-6


def test_prune_a_single_layer():
    layer = sparsity.prune_low_magnitude(keras.layers.Dense(8), pruning_schedule=CONST_HALF)
    assert isinstance(layer, OptimizedLayer)
    inp = keras.Input((6,))
    model = keras.Model(inp, layer(inp))
    model(np.random.rand(4, 6).astype("float32"), training=True)
    assert sparsity.summary(model).overall == pytest.approx(0.5, abs=0.03)


def test_input_model_is_untouched(digits_data):
    base, pruned = _digits_pruned(digits_data, CONST_HALF)
    before = [w.numpy().copy() for w in base.weights]
    pruned.fit(digits_data[0][:64], digits_data[1][:64], verbose=0)
    for b, w in zip(before, base.weights):
        np.testing.assert_array_equal(b, w.numpy())
