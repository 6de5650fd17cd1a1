"""Channel pruning: coupled channels go together, removed zeros change nothing."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kmot import sparsity
from kmot.errors import LayerSelectionError, TransformError, UnsupportedModelError

L = keras.layers


def _shapes(model) -> dict:
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers
            if layer.weights}


def _images(n=8, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels)).astype("float32")


def test_residual_add_couples_its_branches_and_their_consumers():
    i = keras.Input((16, 16, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(i)
    b = L.Conv2D(8, 1, name="b")(i)
    x = L.Add()([a, b])
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(6, 1, name="next")(x)
    model = keras.Model(i, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x)))
    group = next(g for g in sparsity.channel_groups(model) if "a" in g.producers)
    assert set(group.producers) == {"a", "b"} and group.size == 8 and group.prunable
    pruned = sparsity.prune_channels(model, sparsity=0.5)
    s = _shapes(pruned)
    assert s["a"][0][-1] == s["b"][0][-1] == s["bn"][0][0] == s["next"][0][2] == 4
    assert s["next"][0][-1] == 3  # its own group, pruned too
    assert pruned(_images()).shape == (8, 3)


def test_depthwise_and_batchnorm_follow_the_channels_they_read():
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, name="conv"), L.BatchNormalization(name="bn"), L.ReLU(),
        L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"), L.BatchNormalization(name="dw_bn"),
        L.Conv2D(4, 1, name="pw"), L.GlobalAveragePooling2D(), L.Dense(2, name="out"),
    ])
    pruned = sparsity.prune_channels(model, sparsity=0.5, layers="conv")
    s = _shapes(pruned)
    assert s["conv"][0][-1] == 4 and s["bn"][0] == (4,)
    assert s["dw"][0] == (3, 3, 4, 2) and s["dw_bn"][0] == (8,) and s["pw"][0][2] == 8
    assert s["pw"][0][-1] == 4  # not selected: whole


def test_concatenate_maps_index_ranges_to_the_consumer_rows():
    i = keras.Input((8, 8, 2))
    a = L.Conv2D(4, 1, name="a")(i)
    b = L.Conv2D(6, 1, name="b")(i)
    x = L.Concatenate()([a, b])
    model = keras.Model(i, L.Dense(2, name="out")(L.Flatten()(L.Conv2D(5, 1, name="c")(x))))
    ranked = sparsity.prune_channels(model, sparsity=0.5, layers=["a", "b"])
    s = _shapes(ranked)
    assert s["a"][0][-1] == 2 and s["b"][0][-1] == 3 and s["c"][0][2] == 5
    assert ranked(_images(2, 8, 2)).shape == (2, 2)


def test_squeeze_excite_gate_is_coupled_with_the_tensor_it_gates():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(12, 3, padding="same", name="conv")(i)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(4, activation="relu", name="squeeze")(s)
    s = L.Dense(12, activation="sigmoid", name="excite")(s)
    x = L.Multiply()([x, L.Reshape((1, 1, 12), name="reshape")(s)])
    model = keras.Model(i, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))
    groups = {g.producers: g for g in sparsity.channel_groups(model)}
    assert ("conv", "excite") in groups and ("squeeze",) in groups
    pruned = sparsity.prune_channels(model, sparsity=0.5)
    s = _shapes(pruned)
    assert s["conv"][0][-1] == s["excite"][0][-1] == s["squeeze"][0][-1] * 3 == 6
    assert pruned.get_layer("reshape").target_shape[-1] == 6
    assert pruned(_images(2, 8)).shape == (2, 2)


def test_flatten_then_dense_loses_the_rows_of_a_removed_channel():
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(6, 1, name="conv"), L.Flatten(),
                              L.Dense(3, name="out")])
    pruned = sparsity.prune_channels(model, sparsity=0.5)
    assert _shapes(pruned)["out"][0] == (4 * 4 * 3, 3)


def test_subtract_couples_pooling_passes_and_reshape_maps_rows_to_the_dense():
    i = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(i)
    b = L.Conv2D(6, 1, name="b")(i)
    x = L.MaxPooling2D(name="pool")(L.Subtract()([a, b]))
    x = L.Reshape((-1,))(L.Conv2D(4, 1, name="c")(x))     # 4x4 positions x 4 channels
    model = keras.Model(i, L.Dense(3, name="out")(x))
    group = next(g for g in sparsity.channel_groups(model) if "a" in g.producers)
    assert set(group.producers) == {"a", "b"} and group.size == 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = sparsity.prune_channels(model, sparsity=0.5)
    s = _shapes(pruned)
    assert s["a"][0][-1] == s["b"][0][-1] == s["c"][0][2] == 3
    assert s["c"][0][-1] == 2 and s["out"][0] == (4 * 4 * 2, 3)
    # the output layer's channels stay whole as expected, shown by channel_groups, not
    # warned about (every classifier would warn)
    assert not [w for w in caught if "keeps these layers" in str(w.message)]
    out = next(g for g in sparsity.channel_groups(model) if "out" in g.producers)
    assert not out.prunable and out.reason == "reaches a model output"

    # the rows the Dense keeps are the removed channels' own: zero channels change nothing
    model.get_layer("c").kernel.assign(np.concatenate(
        [np.zeros((1, 1, 6, 2), "float32"), np.ones((1, 1, 6, 2), "float32")], axis=-1))
    model.get_layer("c").bias.assign(np.array([0, 0, 0.5, -0.5], "float32"))
    zeroed = sparsity.prune_channels(model, sparsity=0.5, layers="c")
    x = _images(4, 8, 3)
    np.testing.assert_allclose(ops.convert_to_numpy(zeroed(x)), ops.convert_to_numpy(model(x)),
                               atol=1e-5)


def test_keras_ops_nodes_couple_like_layers_and_unknown_ops_stay_whole():
    i = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 1, name="a")(i)
    b = L.Conv2D(8, 1, name="b")(i)
    x = ops.add(a, b)
    x = x * ops.relu6(x + 3.0) / 6.0                # hard-swish as ops
    c = L.Conv2D(8, 1, name="c")(x)
    t = ops.transpose(c, (0, 2, 1, 3))             # nothing maps a transpose
    model = keras.Model(i, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(t)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = sparsity.prune_channels(model, sparsity=0.5)
    s = _shapes(pruned)
    assert s["a"][0][-1] == s["b"][0][-1] == s["c"][0][2] == 4
    assert s["c"][0][-1] == 8
    messages = [str(w.message) for w in caught if "keeps these layers" in str(w.message)]
    assert len(messages) == 1 and "c (passes through" in messages[0]


def test_removing_channels_whose_weights_are_zero_leaves_outputs_unchanged():
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(i)
    a = L.BatchNormalization(name="bn")(a)
    b = L.Conv2D(8, 1, name="b")(i)
    x = L.ReLU()(L.Add()([a, b]))
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    c = L.Conv2D(4, 1, name="c")(x)
    x = L.Concatenate()([d, c])
    model = keras.Model(i, L.Dense(5, name="out")(L.Flatten()(x)))
    bn = model.get_layer("bn")
    bn.set_weights([np.random.default_rng(1).uniform(0.5, 2, (8,)) for _ in range(2)]
                   + [np.zeros(8), np.ones(8)])
    dead = [1, 4, 6, 7]          # channels of the a+b group
    dead_c = [0, 3]              # channels of c
    for name in ("a", "b"):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., dead] = 0
        bias[dead] = 0
        model.get_layer(name).set_weights([kernel, bias])
    kernel, bias = model.get_layer("c").get_weights()
    kernel[..., dead_c] = 0
    kernel[:, :, dead, :] = 0
    bias[dead_c] = 0
    model.get_layer("c").set_weights([kernel, bias])
    kernel, bias = model.get_layer("dw").get_weights()
    kernel[:, :, dead, :] = 0
    model.get_layer("dw").set_weights([kernel, bias])
    # The dense rows read by removed channels (concat positions dead and 8 + dead_c).
    kernel, bias = model.get_layer("out").get_weights()
    rows = kernel.reshape(8 * 8, 12, 5)
    rows[:, dead + [8 + c for c in dead_c], :] = 0
    model.get_layer("out").set_weights([rows.reshape(-1, 5), bias])
    x = _images(8, 8)
    # The BN beta of a dead channel is not zero, so the Add output is not: only the
    # consumers' zero rows make removing it exact (that is the point of the test).
    pruned = sparsity.prune_channels(model, sparsity=0.5)
    assert _shapes(pruned)["a"][0][-1] == 4 and _shapes(pruned)["c"][0][-1] == 2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pruned(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "taylor",
                                        lambda slices: sum(float(np.abs(s).max()) for s in slices)])
def test_every_importance_prunes_and_round_to_keeps_multiples(importance):
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(20, 3, name="conv"),
                              L.BatchNormalization(), L.ReLU(), L.GlobalAveragePooling2D(),
                              L.Dense(3, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned = sparsity.prune_channels(model, sparsity=0.5, importance=importance, round_to=8,
                                     data=(_images(16, 8), np.arange(16) % 3))
    assert _shapes(pruned)["conv"][0][-1] == 16  # 10 kept, rounded up to 16


def test_the_result_is_a_plain_model_that_saves_and_quantizes(tmp_path):
    from kmot import quantization
    from kmot.export import inspect, to_litert

    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="a")(i)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(L.Add()([x, L.Conv2D(8, 1, name="b")(i)]))
    model = keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    pruned = sparsity.prune_channels(model, sparsity=0.5)
    pruned.save(tmp_path / "p.keras")
    loaded = keras.saving.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(_images(2, 8))), keras.ops.convert_to_numpy(pruned(_images(2, 8))),
                               atol=1e-6)
    qat = quantization.quantize_model(pruned)
    qat(_images(4, 8), training=True)
    assert inspect(to_litert(qat)).float_ops_between_io() == []


def test_bad_options_and_models_get_clear_errors():
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(4, 1), L.Flatten(), L.Dense(2)])
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(TransformError, match=r"sparsity in \[0, 1\)"):
            sparsity.prune_channels(model, sparsity=bad)
    with pytest.raises(TransformError, match="Unknown importance"):
        sparsity.prune_channels(model, importance="l3")
    with pytest.raises(TransformError, match="needs data"):
        sparsity.prune_channels(model, importance="taylor")
    with pytest.raises(TransformError, match="round_to"):
        sparsity.prune_channels(model, round_to=0)
    with pytest.raises(LayerSelectionError, match="selects no prunable"):
        sparsity.prune_channels(model, layers="dense")  # its outputs are the model's
    wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
    with pytest.raises(UnsupportedModelError, match="strip the model first"):
        sparsity.prune_channels(wrapped)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(4, 1)

        def call(self, x):
            return self.conv(x)

    sub = Sub()
    sub(np.zeros((1, 4, 4, 1), "float32"))
    with pytest.raises(UnsupportedModelError, match="as_functional"):
        sparsity.prune_channels(sub)


def test_nested_models_take_the_channels_kept_upstream_and_grouped_convs_follow():
    block = keras.Sequential([keras.Input((8, 8, 8)), L.BatchNormalization(name="inner_bn"),
                              L.Conv2D(8, 3, padding="same", groups=8, name="dw_as_conv"),
                              L.Conv2D(6, 1, name="inner_conv")], name="block")
    i = keras.Input((8, 8, 3))
    x = block(L.Conv2D(8, 1, name="outer")(i))
    model = keras.Model(i, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))
    pruned = sparsity.prune_channels(model, sparsity=0.5)
    inner = _shapes(pruned.get_layer("block"))
    assert _shapes(pruned)["outer"][0][-1] == 4
    assert inner["inner_bn"][0] == (4,) and inner["dw_as_conv"][0] == (3, 3, 1, 4)
    assert inner["inner_conv"][0] == (1, 1, 4, 3)
    assert pruned(_images(2, 8)).shape == (2, 2)


def test_macs_count_kernels_times_the_positions_they_run_at():
    from kmot.core.cost import macs

    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="conv"),       # 6x6 out
                              L.DepthwiseConv2D(3, padding="same"), L.Flatten(), L.Dense(2)])
    assert macs(model) == 3 * 3 * 3 * 4 * 36 + 3 * 3 * 4 * 36 + 144 * 2
    assert macs(sparsity.prune_channels(model, sparsity=0.5)) == (
        3 * 3 * 3 * 2 * 36 + 3 * 3 * 2 * 36 + 72 * 2)
