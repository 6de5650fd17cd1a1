import keras
import numpy as np
import pytest

from kmot.core import OptimizedLayer, WeightTransform, clone_model, find_wrappers, weight_keys
from kmot.errors import TransformError


def _model():
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
         keras.layers.BatchNormalization(name="bn"), keras.layers.Flatten(),
         keras.layers.Dense(3, name="head")]
    )


def test_transform_changes_the_forward_pass(scale_transform, diff):
    layer = keras.layers.Dense(3)
    x = np.ones((2, 4), "float32")
    plain = layer(x)
    wrapped = OptimizedLayer(layer, {"kernel": [scale_transform(2.0)]})
    out = wrapped(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out) - layer.bias.numpy(),
                               2.0 * (keras.ops.convert_to_numpy(plain) - layer.bias.numpy()),
                               rtol=1e-5)


def test_chain_applies_in_order(scale_transform):
    @keras.saving.register_keras_serializable(package="kmot_tests")
    class AddOne(WeightTransform):
        def __call__(self, value, *, training):
            return value + 1.0

    layer = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
    wrapped = OptimizedLayer(layer, {"kernel": [AddOne(), scale_transform(3.0)]})
    assert float(keras.ops.convert_to_numpy(wrapped(np.ones((1, 1), "float32")))[0, 0]) == pytest.approx(3.0)


def test_gradients_flow_through_the_transform(scale_transform):
    model = clone_model(_model(), replace=lambda l: OptimizedLayer(l, {"kernel": [scale_transform()]}),
                        layers=["conv", "head"])
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile("sgd", "mse")
    model.fit(np.random.rand(16, 8, 8, 1), np.random.rand(16, 3), epochs=1, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.any(a != b) for a, b in zip(after, before))


def test_wrapped_batchnorm_still_updates_its_statistics():
    bn = keras.layers.BatchNormalization()
    wrapped = OptimizedLayer(bn, {"gamma": []})
    wrapped(np.random.rand(4, 3).astype("float32") + 5.0, training=True)
    assert np.all(bn.moving_mean.numpy() > 0.01)


def test_weight_keys_name_sublayer_weights():
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    x = np.zeros((1, 3, 8), "float32")
    layer(x, x)
    keys = weight_keys(layer)
    assert "query/kernel" in keys and "value/bias" in keys
    wrapped = OptimizedLayer(layer, {"query/kernel": []})
    assert wrapped(x, x).shape == (1, 3, 8)


def test_unknown_weight_is_named():
    wrapped = OptimizedLayer(keras.layers.Dense(2, name="d"), {"kernal": []})
    with pytest.raises(TransformError, match=r"has no weight named 'kernal'.*Expected one of \['bias', 'kernel'\]"):
        wrapped(np.ones((1, 2), "float32"))


def test_non_transform_is_rejected():
    with pytest.raises(TransformError, match=r"must be a kmot.core.WeightTransform instance"):
        OptimizedLayer(keras.layers.Dense(2), {"kernel": [lambda v: v]})


def test_wrapped_model_round_trips_through_keras_file(tmp_path, scale_transform, diff):
    model = clone_model(_model(), replace=lambda l: OptimizedLayer(l, {"kernel": [scale_transform(0.25)]}),
                        layers=keras.layers.Conv2D)
    model.compile("adam", "mse")
    model.fit(np.random.rand(8, 8, 8, 1), np.random.rand(8, 3), epochs=1, verbose=0)
    find_wrappers(model)[0].transforms["kernel"][0].scale.assign(0.75)  # transform state must survive too
    x = np.random.rand(4, 8, 8, 1).astype("float32")
    path = tmp_path / "wrapped.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert diff(model(x), loaded(x)) < 1e-6
    wrapper = find_wrappers(loaded)[0]
    assert isinstance(wrapper.transforms["kernel"][0], scale_transform)
    assert float(wrapper.transforms["kernel"][0].scale.numpy()) == pytest.approx(0.75)
