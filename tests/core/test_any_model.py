"""Any Keras 3 model, any chain: raw keras.ops graphs, subclassed models, and
prune -> cluster -> QAT carried as transforms all the way into the int8 file."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kmot import clustering, quantization, sparsity
from kmot.core import find_wrappers, kernels, walk_operations
from kmot.errors import TransformError, UnsupportedModelError
from kmot.export import inspect, parity, to_litert

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
HALF = sparsity.ConstantSparsity(0.5, 0, frequency=1)


def _fit(model, x, y, epochs=1):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def _raw_ops_model():
    """MobileNetV3's hard-swish and a residual written with keras.ops on symbolic tensors."""
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    h = h * keras.layers.ReLU(6.0, name="relu6")(h + 3.0) * (1.0 / 6.0)
    h = ops.add(h, keras.layers.Conv2D(8, 1, name="pointwise")(h))
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(h))


def test_raw_ops_model_through_prune_cluster_and_qat_is_fully_int8(digits_data):
    x, y, x_test, _ = digits_data
    model = _fit(_raw_ops_model(), x[:640], y[:640], epochs=2)
    ops_nodes = [op for op in walk_operations(model) if not isinstance(op, keras.layers.Layer)]
    assert {type(op).__name__ for op in ops_nodes} == {"Add", "Multiply"}
    pruned = _fit(sparsity.prune_low_magnitude(model, pruning_schedule=HALF), x[:640], y[:640])
    assert sparsity.summary(pruned).overall == pytest.approx(0.5, abs=0.01)
    clustered = _fit(clustering.cluster_weights(model, number_of_clusters=8), x[:640], y[:640])
    assert max(w.unique_values for w in clustering.summary(clustered).weights) <= 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every layer and op has a rule: no "stays float"
        qat = quantization.quantize_model(model)
    qat = _fit(qat, x[:640], y[:640])
    content = to_litert(qat)  # strict int8: fails if any op stays float
    info = inspect(content)
    assert info.float_ops_between_io() == []
    assert info.op_counts.get("HARD_SWISH") == 1  # the converter recognises x * relu6(x + 3) / 6
    assert parity(qat, content, x_test).argmax_agreement >= 0.99


class SubclassedNet(keras.Model):
    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
        self.flat = keras.layers.Flatten(name="flat")
        self.blocks = [keras.layers.Dense(32, activation="relu", name="hidden"),
                       keras.layers.Dense(classes, name="logits")]

    def call(self, x, training=None):  # fit passes training=True only to a call that takes it
        h = self.flat(self.conv(x))
        for block in self.blocks:
            h = block(h)
        return h


@pytest.fixture(scope="module")
def subclassed(digits_data):
    x, y = digits_data[0], digits_data[1]
    net = SubclassedNet()
    net(x[:1])
    return _fit(net, x, y, epochs=3)


def test_one_tensor_through_several_relu_layers_is_fully_int8(digits_data):
    """NASNet applies ReLU to one tensor in up to five places (before a conv, an
    average pooling, a padded strided separable conv); TF merges the identical ReLUs
    into one op, which takes one output scale: with a quantizer each, it stayed float."""
    x_train, y_train, x_test, _ = digits_data
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = L.BatchNormalization()(L.Conv2D(8, 3, use_bias=False)(inputs))
    a = L.Conv2D(8, 1)(L.Activation("relu")(x))
    b = L.Conv2D(8, 1)(L.AveragePooling2D((1, 1), strides=2)(L.Activation("relu")(x)))
    c = L.SeparableConv2D(8, 3, strides=2)(L.ZeroPadding2D(((0, 1), (0, 1)))(L.Activation("relu")(x)))
    pooled = [L.GlobalAveragePooling2D()(t) for t in (a, b, c)]
    model = keras.Model(inputs, L.Dense(10)(L.Concatenate()(pooled)))
    qat = quantization.quantize_model(model)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    content = to_litert(qat)  # strict: raises while a RELU stays float
    assert inspect(content).float_ops_between_io() == []
    assert parity(qat, content, x_test).argmax_agreement >= 0.97


def test_subclassed_model_through_prune_and_cluster(subclassed, digits_data, diff):
    x, y, x_test, y_test = digits_data
    before = [w.numpy().copy() for w in subclassed.weights]
    pruned = _fit(sparsity.prune_low_magnitude(subclassed, pruning_schedule=HALF), x[:640], y[:640])
    assert type(pruned) is SubclassedNet and len(find_wrappers(pruned)) == 3
    final = sparsity.strip_pruning(pruned)
    assert type(final) is SubclassedNet and not find_wrappers(final)
    assert diff(final(x_test[:32]), pruned(x_test[:32])) < 1e-5
    assert sparsity.summary(final).overall == pytest.approx(0.5, abs=0.01)

    clustered = _fit(clustering.cluster_weights(final, number_of_clusters=8, preserve_sparsity=True),
                     x[:640], y[:640])
    stripped = clustering.strip_clustering(clustered)
    for row in clustering.summary(stripped).weights:
        assert row.unique_values <= 8 and row.sparsity >= 0.49
    accuracy = np.mean(np.argmax(stripped.predict(x_test, verbose=0), -1) == y_test)
    assert accuracy > 0.5
    # the baseline is untouched
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, subclassed.weights))


def test_subclassed_model_is_traced_for_qat(subclassed, digits_data):
    x, y, x_test, _ = digits_data
    qat = _fit(quantization.quantize_model(subclassed), x[:640], y[:640])
    assert quantization.is_qat_model(qat)
    content = to_litert(qat)
    assert inspect(content).float_ops_between_io() == []
    assert parity(qat, content, x_test).argmax_agreement >= 0.99


def test_untraceable_subclassed_model_gets_the_remedy(digits_data):
    class Branchy(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(10)
            self.flat = keras.layers.Flatten()

        def call(self, x, training=None):
            h = self.flat(x)
            if float(ops.convert_to_numpy(ops.max(h))) > 0.5:  # Python control flow on values
                h = h * 2.0
            return self.dense(h)

    net = Branchy()
    net(digits_data[0][:2])
    assert find_wrappers(sparsity.prune_low_magnitude(net, pruning_schedule=HALF))  # weights only
    with pytest.raises(UnsupportedModelError, match=r"could not be traced.*Functional API"):
        quantization.quantize_model(net)


def test_subclassed_model_without_training_argument_cannot_be_pruned(digits_data):
    class NoTraining(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.flat = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(self.flat(x))

    net = NoTraining()
    net(digits_data[0][:2])
    with pytest.raises(TransformError, match=r"call\(\) without a `training` argument.*never update"):
        sparsity.prune_low_magnitude(net, pruning_schedule=HALF)


CHAIN_CASES = {
    "Conv1D": (lambda: keras.Sequential([
        keras.Input((40, 1)), keras.layers.Conv1D(16, 5, activation="relu", name="k"),
        keras.layers.Flatten(), keras.layers.Dense(10, name="logits")]), "mnist1d"),
    "Conv2D": (lambda: keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu", name="k"),
        keras.layers.Flatten(), keras.layers.Dense(10, name="logits")]), "digits"),
    "DepthwiseConv2D": (lambda: keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="stem"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=4, activation="relu", name="k"),
        keras.layers.Flatten(), keras.layers.Dense(10, name="logits")]), "digits"),
    "Dense": (lambda: keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="k"), keras.layers.Dense(10, name="logits")]),
        "digits"),
}


def _int8_kernels(content):
    """(name, int8 array with its zero points, output-channel axis) of each kernel in the file."""
    info = inspect(content)
    found = []
    for w in info.weights:
        if w.is_bias or len(w.shape) < 2:
            continue
        axis = 3 if w.op == "DEPTHWISE_CONV_2D" else 0  # LiteRT: (1, h, w, out) / (out, ...)
        found.append((w.name, info.constant(w.name), axis))
    return found


@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_prune_cluster_qat_without_stripping_keeps_zeros_and_clusters(case, digits_data):
    build, task = CHAIN_CASES[case]
    if task == "mnist1d":
        from kmot.data import mnist1d

        x, y, x_test, _ = mnist1d(num_samples=800)
    else:
        x, y, x_test, _ = digits_data
        x, y = x[:640], y[:640]
    base = _fit(build(), x, y)
    pruned = _fit(sparsity.prune_low_magnitude(
        base, pruning_schedule=sparsity.ConstantSparsity(0.8, 0, frequency=1)), x, y)
    clustered = _fit(clustering.cluster_weights(pruned, number_of_clusters=8, preserve_sparsity=True),
                     x, y)  # no strip in between: the masks are transforms of the chain
    qat = _fit(quantization.quantize_model(clustered), x, y)
    content = to_litert(qat)
    assert inspect(content).float_ops_between_io() == []
    found = _int8_kernels(content)
    assert len(found) == len(find_wrappers(pruned))
    for name, values, axis in found:
        zeros = np.mean(values == 0)
        pruned_share = round(0.8 * values.size) / values.size  # masks prune exactly round(s * n)
        by_channel = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        per_channel = max(len(np.unique(c)) for c in by_channel)
        assert zeros >= 0.999 * pruned_share, (name, zeros)
        assert per_channel <= 8, (name, per_channel)


@pytest.mark.parametrize("layer, channel_axes", [
    (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="k"), (2, 3)),
    (keras.layers.Conv2DTranspose(6, 3, name="k"), (2,)),
])
def test_per_channel_clustering_follows_the_output_channels(layer, channel_axes, digits_data):
    model = keras.Sequential([keras.Input((8, 8, 3)), layer, keras.layers.Flatten(),
                              keras.layers.Dense(10, name="logits")])
    (kernel,) = kernels(model.get_layer("k"))
    assert kernel.out_axes() == channel_axes
    clustered = clustering.cluster_weights(model, number_of_clusters=4, cluster_per_channel=True,
                                           layers="k")
    value = np.asarray(clustered.get_layer("k_opt").transformed_value(
        clustered.get_layer("k_opt").layer.kernel))
    moved = np.moveaxis(value, channel_axes, tuple(range(len(channel_axes))))
    channels = moved.reshape(int(np.prod(moved.shape[:len(channel_axes)])), -1)
    assert all(len(np.unique(c)) <= 4 for c in channels)
    # slices of the last axis alone (the input channels here) mix output channels
    assert max(len(np.unique(value[..., i])) for i in range(value.shape[-1])) > 4


def test_unknown_kernels_are_named_once(digits_data):
    @keras.saving.register_keras_serializable(package="kmot_tests")
    class Bilinear(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], shape[-1]), name="w")

        def call(self, x):
            return ops.matmul(x, self.w)

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    h = Bilinear(name="bilinear")(keras.layers.Dense(16, name="d")(h))
    h = keras.layers.LayerNormalization(name="norm")(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(h))
    for verb in (lambda: sparsity.prune_low_magnitude(model, pruning_schedule=HALF),
                 lambda: clustering.cluster_weights(model, number_of_clusters=4)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped = verb()
        messages = [str(w.message) for w in caught if "does not know" in str(w.message)]
        assert len(messages) == 1 and "bilinear (Bilinear: w)" in messages[0], messages
        assert "norm" not in messages[0]  # normalization weights are not kernels
        assert {w.layer.name for w in find_wrappers(wrapped)} == {"d", "logits"}
