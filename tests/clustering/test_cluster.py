import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmot import clustering
from kmot.core import find_wrappers
from kmot.errors import LayerSelectionError, TransformError

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits")])


def _fit(model, digits_data, epochs=1):
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(digits_data[0][:512], digits_data[1][:512], batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.mark.parametrize("init", clustering.CENTROID_INITS)
def test_each_init_clusters_and_strips(init, digits_data):
    keras.utils.set_random_seed(0)
    clustered = _fit(clustering.cluster_weights(_model(), number_of_clusters=6,
                                                cluster_centroids_init=init), digits_data)
    final = clustering.strip_clustering(clustered)
    assert not find_wrappers(final)
    for w in clustering.summary(final).weights:
        assert w.unique_values <= 6, (w.layer, w.unique_values)
    x = digits_data[2][:32]
    np.testing.assert_allclose(final.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-5)


def test_centroids_and_assignments_train(digits_data):
    keras.utils.set_random_seed(0)
    clustered = clustering.cluster_weights(_model(), number_of_clusters=8, layers="hidden")
    transform = find_wrappers(clustered)[0].transforms["kernel"][0]
    before = transform.centroids.numpy().copy()
    kernel_before = find_wrappers(clustered)[0].layer.kernel.numpy().copy()
    _fit(clustered, digits_data)
    assert np.any(transform.centroids.numpy() != before)  # gradients reach the centroids
    assert np.any(find_wrappers(clustered)[0].layer.kernel.numpy() != kernel_before)  # and the weights


def test_per_channel_clusters(digits_data):
    keras.utils.set_random_seed(0)
    clustered = _fit(clustering.cluster_weights(_model(), number_of_clusters=4, cluster_per_channel=True),
                     digits_data)
    for w in clustering.summary(clustering.strip_clustering(clustered)).weights:
        assert w.max_unique_per_channel <= 4
        assert w.unique_values > 4  # different centroids in different channels


def test_preserve_sparsity_keeps_zeros_and_counts_the_zero(digits_data):
    model = _model()
    kernel = model.get_layer("hidden").kernel
    values = kernel.numpy()
    values[np.abs(values) < np.quantile(np.abs(values), 0.6)] = 0.0
    kernel.assign(values)
    keras.utils.set_random_seed(0)
    clustered = _fit(clustering.cluster_weights(model, number_of_clusters=8, preserve_sparsity=True,
                                                layers="hidden"), digits_data, epochs=2)
    final = clustering.strip_clustering(clustered).get_layer("hidden").kernel.numpy()
    np.testing.assert_array_equal(final == 0, values == 0)
    assert len(np.unique(final)) <= 8


def test_keras_round_trip(digits_data, tmp_path):
    keras.utils.set_random_seed(0)
    clustered = _fit(clustering.cluster_weights(_model(), number_of_clusters=8), digits_data)
    path = tmp_path / "clustered.keras"
    clustered.save(path)
    loaded = keras.saving.load_model(path)
    x = digits_data[2][:16]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-6)
    for a, b in zip(find_wrappers(clustered), find_wrappers(loaded)):
        np.testing.assert_array_equal(a.transforms["kernel"][0].centroids.numpy(),
                                      b.transforms["kernel"][0].centroids.numpy())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"number_of_clusters": 1}, TransformError, r"must be an int >= 2.*Received: number_of_clusters=1"),
    ({"number_of_clusters": 8, "cluster_centroids_init": "kmeans"}, TransformError, r"one of \['kmeans\+\+'"),
    ({"number_of_clusters": 8, "layers": ["flat"]}, LayerSelectionError, r"'flat' \(Flatten\) has no clusterable weights"),
    ({"number_of_clusters": 8, "layers": "nope"}, LayerSelectionError, r"selects no layer"),
])
def test_errors_name_the_problem(kwargs, error, message):
    with pytest.raises(error, match=message):
        clustering.cluster_weights(_model(), **kwargs)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 10_000),
       init=st.sampled_from(clustering.CENTROID_INITS), per_channel=st.booleans())
def test_stripped_weight_has_at_most_k_values(k, seed, init, per_channel):
    rng = np.random.default_rng(seed)
    weight = keras.Variable(rng.standard_t(3, size=(6, 5)).astype("float32"))
    transform = clustering.ClusterTransform(k, init=init, per_channel=per_channel)
    created = []

    def add_weight(name, shape, *, initializer="zeros", dtype=None, trainable=False):
        var = keras.Variable(initializer(shape, "float32") if callable(initializer) else
                             np.zeros(shape, "float32"), trainable=trainable, name=name)
        created.append(var)
        return var

    transform.build(weight, add_weight)
    out = keras.ops.convert_to_numpy(transform.strip(keras.ops.convert_to_tensor(weight.numpy())))
    if per_channel:
        assert max(len(np.unique(out[:, c])) for c in range(out.shape[1])) <= k
    else:
        assert len(np.unique(out)) <= k


def _centroid_gradients(jit_compile: bool):
    """The gradients of sum(clustered * upstream) for the centroids and the weight,
    and what they should be: each centroid's, the sum of its weights' upstream."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    weight = keras.Variable(rng.normal(size=(40, 7)).astype("float32"))
    transform = clustering.ClusterTransform(5, init="linear")
    created = {}

    def add_weight(name, shape, *, initializer="zeros", dtype=None, trainable=False):
        created[name] = keras.Variable(initializer(shape, "float32"), trainable=trainable)
        return created[name]

    transform.build(weight, add_weight)
    upstream = rng.normal(size=(40, 7)).astype("float32")

    @tf.function(jit_compile=jit_compile)
    def gradients(value):
        # Plus a zero XLA cannot know when it compiles: nothing computed from the
        # value is a compile-time constant then. (A variable's value, it takes as a
        # constant and recompiles for whenever it changes: on every training step.)
        value = value + 0.0 * tf.random.uniform(value.shape)
        with tf.GradientTape() as tape:
            tape.watch(value)
            loss = tf.reduce_sum(transform(value, training=True) * upstream)
        return tape.gradient(loss, [created["centroids"].value, value])

    d_centroids, d_weight = gradients(tf.constant(weight.numpy()))
    centroids = created["centroids"].numpy()[0]
    nearest = np.abs(weight.numpy()[..., None] - centroids).argmin(-1)
    expected = np.array([upstream[nearest == j].sum() for j in range(5)])
    return np.asarray(d_centroids)[0], expected, np.asarray(d_weight), upstream


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_centroid_gradient_sums_the_gradients_of_their_weights(jit_compile):
    # XLA: what Keras compiles a TensorFlow step with on a GPU, or with
    # jit_compile=True; the bincount's length must be a constant there.
    d_centroids, expected, d_weight, upstream = _centroid_gradients(jit_compile)
    np.testing.assert_allclose(d_centroids, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_weight, upstream)  # straight-through
