import keras
import numpy as np
import pytest

from kmot.core import OptimizedLayer, clone_model, find_wrappers, strip, walk_layers
from kmot.errors import UnsupportedModelError


def _sequential():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
         keras.layers.BatchNormalization(), keras.layers.Dropout(0.2), keras.layers.Dense(3)]
    )


def _multi_io_shared_nested():
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    shared = keras.layers.Dense(8, name="shared")
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(5, name="inner_dense"),
         keras.layers.LayerNormalization(name="inner_norm")],
        name="inner",
    )
    ha, hb = shared(a), shared(b)
    merged = keras.layers.Concatenate(name="concat")([ha, hb])
    out1 = keras.layers.Dense(3, name="out1")(merged)
    out2 = inner(hb)
    return keras.Model([a, b], [out1, out2], name="multi")


def _conv_functional_nested():
    inner_in = keras.Input((8, 8, 4))
    inner_out = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inner_in)
    inner = keras.Model(inner_in, inner_out, name="inner_functional")
    x = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    h = inner(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(2, name="head")(h))


def _inputs(model, n=5):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, *t.shape[1:])).astype("float32") for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


@pytest.mark.parametrize("build", [_sequential, _multi_io_shared_nested, _conv_functional_nested])
def test_identity_rewrite_reproduces_outputs(build, diff):
    model = build()
    x = _inputs(model)
    clone = clone_model(model)
    assert clone is not model
    assert diff(model(x), clone(x)) < 1e-6
    if not isinstance(model, keras.Sequential):
        assert [t.name for t in clone.inputs] == [t.name for t in model.inputs]


def test_clone_is_independent_of_the_original(diff):
    model = _multi_io_shared_nested()
    x = _inputs(model)
    before = model(x)
    clone = clone_model(model)
    for w in clone.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    assert diff(before, model(x)) == 0.0


def test_shared_layer_stays_shared_when_wrapped():
    model = _multi_io_shared_nested()
    wrapped = clone_model(model, replace=lambda l: OptimizedLayer(l, {"kernel": []}), layers="shared")
    wrappers = find_wrappers(wrapped)
    assert [w.layer.name for w in wrappers] == ["shared"]
    assert len(wrappers[0]._inbound_nodes) == 2


def test_wrapping_reaches_into_nested_models(scale_transform, diff):
    model = _conv_functional_nested()
    x = _inputs(model)
    wrapped = clone_model(
        model,
        replace=lambda l: OptimizedLayer(l, {"kernel": [scale_transform(0.0)]}),
        layers=keras.layers.DepthwiseConv2D,
    )
    assert [w.layer.name for w in find_wrappers(wrapped)] == ["dw"]
    # A zero depthwise kernel leaves only the bias: outputs change.
    assert diff(model(x), wrapped(x)) > 1e-3


def test_replace_sees_only_selected_layers():
    seen = []
    clone_model(_multi_io_shared_nested(), replace=lambda l: seen.append(l.name),
                layers=keras.layers.Dense)
    assert sorted(seen) == ["inner_dense", "out1", "shared"]


def test_strip_returns_plain_layers_with_final_weights(scale_transform, diff):
    model = _sequential()
    x = _inputs(model)
    wrapped = clone_model(
        model, replace=lambda l: OptimizedLayer(l, {"kernel": [scale_transform(0.5)]}),
        layers=keras.layers.Dense,
    )
    plain = strip(wrapped)
    assert not find_wrappers(plain)
    assert [type(l).__name__ for l in walk_layers(plain)] == [
        type(l).__name__ for l in walk_layers(model)]
    assert diff(wrapped(x), plain(x)) < 1e-6
    assert diff(plain(x), strip(plain)(x)) == 0.0  # stripping twice is harmless
    dense = plain.layers[0]
    np.testing.assert_allclose(dense.kernel.numpy(), 0.5 * model.layers[0].kernel.numpy(), rtol=1e-6)


def test_subclassed_model_is_copied_with_its_layers_swapped(scale_transform, diff):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.blocks = [keras.layers.Dense(8, activation="relu", name="d1"),
                           keras.layers.Dense(8, name="d2")]
            self.flat = keras.layers.Flatten()

        def call(self, x):
            h = self.flat(self.conv(x))
            for block in self.blocks:
                h = block(h)
            return h

    net = Net()
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 1)).astype("float32")
    net(x)
    copy = clone_model(net)
    assert type(copy) is Net and copy is not net
    assert diff(net(x), copy(x)) < 1e-6
    copy.blocks[0].kernel.assign(np.zeros((64, 8), "float32"))
    assert np.abs(net.blocks[0].kernel.numpy()).sum() > 0  # independent weights

    wrapped = clone_model(net, layers=keras.layers.Dense, replace=lambda layer: OptimizedLayer(
        layer, {"kernel": [scale_transform(0.0)]}))
    assert [type(b).__name__ for b in wrapped.blocks] == ["OptimizedLayer"] * 2
    assert isinstance(wrapped.conv, keras.layers.Conv2D)
    assert diff(wrapped(x), np.zeros((3, 8))) == 0.0   # both Dense kernels scaled to 0
    assert {layer.name for layer in walk_layers(wrapped)} >= {"d1_opt", "d2_opt", "conv"}
    plain = strip(wrapped)
    assert type(plain) is Net and not find_wrappers(plain)
    assert diff(plain(x), wrapped(x)) == 0.0


def test_subclassed_model_that_cannot_be_rebuilt_gets_a_clear_error():
    class Opaque:
        pass

    class Net(keras.Model):
        def __init__(self, helper):
            super().__init__()
            self.helper = helper
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

        def get_config(self):
            raise NotImplementedError("no config")

    net = Net(Opaque())
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match=r"Subclassed model .*cannot be copied.*get_config"):
        clone_model(net)


def test_unbuilt_sequential_gets_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="is not built"):
        clone_model(keras.Sequential([keras.layers.Dense(2)]))


def _split_dense(layer):
    """`layer` as an identity Dense followed by a copy of it (computes the same)."""
    n = layer.kernel.shape[0]
    identity = keras.layers.Dense(n, use_bias=False, name=f"{layer.name}_identity")
    identity.build((None, n))
    identity.set_weights([np.eye(n, dtype="float32")])
    return [identity, layer]


def test_replace_may_return_a_chain_of_layers_in_a_functional_graph(diff):
    model = _multi_io_shared_nested()
    x = _inputs(model)
    graph = clone_model(model, layers="shared", replace=_split_dense)
    assert diff(model(x), graph(x)) < 1e-6
    # Sequential models list their layers, one each: only a Functional copy takes a chain.
    with pytest.raises(UnsupportedModelError, match=r"inside a Sequential model.*as_functional"):
        clone_model(model, layers="inner_dense", replace=_split_dense)


def test_a_chain_in_a_functional_copy_of_a_nested_sequential(diff):
    from kmot.core import as_functional

    model = _multi_io_shared_nested()
    x = _inputs(model)
    graph = clone_model(as_functional(model), layers=["shared", "inner_dense"], replace=_split_dense)
    assert diff(model(x), graph(x)) < 1e-6
    assert len(graph.get_layer("shared_identity")._inbound_nodes) == 2  # still shared
    assert [l.name for l in graph.get_layer("inner").layers[1:3]] == ["inner_dense_identity", "inner_dense"]
