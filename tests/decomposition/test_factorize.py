"""Low-rank factorization: exact where the kernel has that rank, optimal where it is cut,
and the result a plain Keras model that trains, saves, quantizes and exports."""

import keras
import numpy as np
import pytest

from kmot import decomposition
from kmot.core.cost import macs
from kmot.decomposition import DecompositionError, factorize, summary
from kmot.errors import LayerSelectionError, UnsupportedModelError

L = keras.layers
RNG = np.random.default_rng(0)


def _data(model, n=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype("float32")


def _set_kernel(layer, kernel):
    layer.kernel.assign(kernel.astype("float32"))
    if layer.bias is not None:
        layer.bias.assign(RNG.normal(size=layer.bias.shape).astype("float32"))


def _low_rank(m, n, r):
    return RNG.normal(size=(m, r)) @ RNG.normal(size=(r, n)) / np.sqrt(r)


def _tucker_kernel(taps, cin, cout, r):
    core = RNG.normal(size=(*taps, r, r))
    u_in, _ = np.linalg.qr(RNG.normal(size=(cin, r)))
    u_out, _ = np.linalg.qr(RNG.normal(size=(cout, r)))
    return np.einsum("...ab,ia,ob->...io", core, u_in, u_out)


def _dense():
    model = keras.Sequential([keras.Input((32,)), L.Dense(48, activation="relu", name="layer")])
    _set_kernel(model.get_layer("layer"), _low_rank(32, 48, 4))
    return model, {}, ["layer_reduce", "layer"]


def _einsum(equation="abc,cde->abde", shape=(5, 12), out=(None, 6, 8), bias="de"):
    def make():
        i = keras.Input(shape)
        layer = L.EinsumDense(equation, output_shape=out, bias_axes=bias, activation="tanh",
                              name="layer")
        model = keras.Model(i, layer(i))
        kernel = layer.kernel.shape
        _set_kernel(layer, _low_rank(kernel[0], int(np.prod(kernel[1:])), 4).reshape(kernel))
        return model, {}, ["layer_reduce", "layer"]
    return make


def _conv2d_tucker():
    i = keras.Input((12, 12, 16))
    layer = L.Conv2D(24, 3, strides=2, padding="same", activation="relu", name="layer")
    model = keras.Model(i, layer(i))
    _set_kernel(layer, _tucker_kernel((3, 3), 16, 24, 4))
    return model, {"method": "tucker"}, ["layer_reduce", "layer_core", "layer"]


def _conv2d_spatial(kernel_size=(3, 5), strides=(2, 1), dilation=(1, 1), padding="same"):
    def make():
        i = keras.Input((11, 13, 16))
        layer = L.Conv2D(24, kernel_size, strides=strides, dilation_rate=dilation,
                         padding=padding, activation="relu", name="layer")
        model = keras.Model(i, layer(i))
        kh, kw = layer.kernel_size
        matrix = _low_rank(kh * 16, kw * 24, 4)
        _set_kernel(layer, matrix.reshape(kh, 16, kw, 24).transpose(0, 2, 1, 3))
        return model, {"method": "spatial"}, ["layer_vertical", "layer"]
    return make


def _conv1d_tucker():
    i = keras.Input((20, 16))
    layer = L.Conv1D(24, 5, padding="causal", dilation_rate=2, name="layer")
    model = keras.Model(i, layer(i))
    _set_kernel(layer, _tucker_kernel((5,), 16, 24, 4))
    return model, {"method": "tucker"}, ["layer_reduce", "layer_core", "layer"]


@pytest.mark.parametrize("make", [
    _dense, _einsum(), _einsum("ab,bc->ac", (12,), 20, "c"), _einsum("...b,bc->...c", (3, 12), 20, None),
    _conv2d_tucker, _conv2d_spatial(), _conv2d_spatial(3, (1, 1), (2, 2), "valid"), _conv1d_tucker,
], ids=["dense", "einsum_abde", "einsum_ac", "einsum_ellipsis", "conv2d_tucker",
        "conv2d_spatial", "conv2d_spatial_dilated", "conv1d_tucker"])
def test_a_kernel_of_rank_r_factored_at_rank_r_computes_the_same(make, diff):
    model, options, names = make()
    x = _data(model)
    small = factorize(model, rank=4, **options)
    assert [layer.name for layer in small.layers[1:]] == names
    assert diff(model(x), small(x)) < 1e-4
    row = summary(small).layer("layer")
    assert row.kept_energy == pytest.approx(1.0, abs=1e-6)
    assert row.params_after < row.params_before and row.macs_after < row.macs_before
    assert small.count_params() == summary(small).params_after
    assert macs(small) == summary(small).macs_after


def test_truncated_svd_is_the_best_rank_r_approximation():
    model = keras.Sequential([keras.Input((40,)), L.Dense(30, name="d")])
    kernel = np.asarray(model.get_layer("d").kernel)
    small = factorize(model, rank=7)
    a = np.asarray(small.get_layer("d_reduce").kernel, np.float64)
    b = np.asarray(small.get_layer("d").kernel, np.float64)
    s = np.linalg.svd(kernel.astype(np.float64), compute_uv=False)
    assert np.linalg.norm(kernel - a @ b) == pytest.approx(np.sqrt(np.sum(s[7:] ** 2)), rel=1e-5)
    # The singular values are split evenly: both factors have the same scale.
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(small.get_layer("d").bias, model.get_layer("d").bias)


def _two_spectra():
    model = keras.Sequential([keras.Input((64,)), L.Dense(64, activation="relu", name="flat"),
                              L.Dense(64, name="steep")])
    u, _ = np.linalg.qr(RNG.normal(size=(64, 64)))
    v, _ = np.linalg.qr(RNG.normal(size=(64, 64)))
    model.get_layer("steep").kernel.assign((u * 0.7 ** np.arange(64)) @ v)
    return model


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.95])
def test_energy_keeps_the_smallest_rank_reaching_it_per_layer(energy):
    model = _two_spectra()
    result = summary(factorize(model, energy=energy))
    for name in ("flat", "steep"):
        row = result.layer(name)
        s2 = np.linalg.svd(np.asarray(model.get_layer(name).kernel), compute_uv=False) ** 2
        kept = np.cumsum(s2) / s2.sum()
        if row.factored:
            (r,) = row.ranks
            assert row.kept_energy == pytest.approx(kept[r - 1]) and row.kept_energy >= energy
            assert r == 1 or kept[r - 2] < energy
        else:  # the rank reaching `energy` would not save anything
            assert np.searchsorted(kept, energy) + 1 >= 64 * 64 / 128
    assert result.layer("steep").ranks[0] < (result.layer("flat").ranks or (64,))[0]


@pytest.mark.parametrize("compression", [2.0, 3.0])
def test_compression_meets_its_parameter_target(trained_conv_bn_dense, compression):
    small = factorize(trained_conv_bn_dense, compression=compression)
    assert small.count_params() <= trained_conv_bn_dense.count_params() / compression
    result = summary(small)
    assert result.compression >= compression and result.params_after == small.count_params()
    assert result.macs_after == macs(small) < macs(trained_conv_bn_dense)


def test_compression_spends_rank_where_it_keeps_the_most_energy():
    result = summary(factorize(_two_spectra(), compression=4.0))
    assert result.layer("steep").kept_energy > 0.9 > result.layer("flat").kept_energy
    assert result.layer("flat").ranks[0] > result.layer("steep").ranks[0]


def _conv_net():
    i = keras.Input((16, 16, 8))
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="square")(i)
    x = L.Conv2D(32, (1, 7), padding="same", name="wide")(x)
    x = L.Conv2D(64, 3, strides=2, padding="same", name="strided")(x)
    return keras.Model(i, L.Dense(10, name="head")(L.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("rank", [2, 6, 12])
def test_auto_picks_the_factorization_with_fewer_macs(rank):
    model = _conv_net()
    auto = summary(factorize(model, rank=rank))
    by_method = {m: summary(model, rank=rank, method=m) for m in ("tucker", "spatial")}
    for name in ("square", "wide", "strided"):
        costs = {m: s.layer(name).macs_after for m, s in by_method.items()}
        row = auto.layer(name)
        assert row.macs_after == min(costs.values())
        if row.factored:
            assert row.method == min(costs, key=costs.get)


def test_summary_previews_what_factorize_does():
    model = _conv_net()
    preview = summary(model, compression=2.0)
    done = summary(factorize(model, compression=2.0))
    assert [(r.layer, r.method, r.ranks, r.params_after) for r in preview.layers] == [
        (r.layer, r.method, r.ranks, r.params_after) for r in done.layers]
    assert [r.kept_energy for r in preview.layers] == pytest.approx([r.kept_energy for r in done.layers])
    table = done.format_table()
    assert "strided" in table and "parameters" in table
    from rich.console import Console

    console = Console(record=True, width=150)
    console.print(done)
    assert "square" in console.export_text()


def test_tucker_refinement_keeps_at_least_the_hosvd_energy():
    model = _conv_net()
    for row in summary(factorize(model, rank=6, method="tucker")).layers:
        if row.method == "tucker":
            from kmot.decomposition.factors import TuckerSpectrum

            kernel = np.asarray(model.get_layer(row.layer).kernel)
            assert row.kept_energy >= TuckerSpectrum(kernel).kept_energy(*row.ranks) - 1e-9


def test_the_input_model_is_untouched():
    model = _conv_net()
    before = [np.array(w) for w in model.weights]
    names = [layer.name for layer in model.layers]
    factorize(model, compression=3.0)
    assert [layer.name for layer in model.layers] == names
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b)


def test_nested_models_and_shared_layers(diff):
    inner = keras.Sequential([keras.Input((32,)), L.Dense(40, activation="relu", name="inner")],
                             name="block")
    shared = L.Dense(32, name="shared")
    a, b = keras.Input((24,), name="a"), keras.Input((24,), name="b")
    out = inner(L.Add()([shared(a), shared(b)]))
    model = keras.Model([a, b], out)
    _set_kernel(model.get_layer("block").get_layer("inner"), _low_rank(32, 40, 3))
    _set_kernel(shared, _low_rank(24, 32, 3))
    x = [np.random.default_rng(s).normal(size=(6, 24)).astype("float32") for s in (1, 2)]
    small = factorize(model, rank=3)
    assert diff(model(x), small(x)) < 1e-4
    assert len(small.get_layer("shared_reduce")._inbound_nodes) == 2  # still shared
    assert [l.name for l in small.get_layer("block").layers[1:]] == ["inner_reduce", "inner"]


def test_saves_and_loads_as_keras(tmp_path, diff):
    model = _conv_net()
    small = factorize(model, energy=0.8)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    x = _data(model)
    assert diff(small(x), loaded(x)) == 0.0
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in small.layers]


def test_layers_it_cannot_factor_stay_whole_with_the_reason(diff):
    i = keras.Input((8, 8, 16))
    x = L.Conv2D(32, 3, groups=4, name="grouped")(i)
    x = L.DepthwiseConv2D(3, name="depthwise")(x)
    x = L.Conv1D(16, 3, name="conv1d")(L.Reshape((16, 32))(x))
    model = keras.Model(i, x)
    result = summary(factorize(model, rank=2, method="spatial"))
    notes = {r.layer: r.note for r in result.layers}
    assert "grouped convolution" in notes["grouped"]
    assert "DepthwiseConv2D is not factored" in notes["depthwise"]
    assert "does not apply to a Conv1D" in notes["conv1d"]
    assert not any(r.factored for r in result.layers)
    assert "factors Dense and EinsumDense only" in summary(model, rank=2, method="svd").layer("conv1d").note


def test_a_rank_that_saves_nothing_leaves_the_layer_whole():
    model = keras.Sequential([keras.Input((8,)), L.Dense(8, name="d")])
    row = summary(factorize(model, rank=6)).layer("d")
    assert not row.factored and "would not save" in row.note


def _train(model, x, y, epochs, lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model.fit(x, y, epochs=epochs, batch_size=64, verbose=0).history["loss"]


@pytest.mark.slow
def test_factored_model_fine_tunes_exports_int8_and_trains_with_qat(trained_conv_bn_dense, digits_data):
    from kmot.export import LiteRTModel, inspect, to_litert
    from kmot.quantization import quantize_model

    x, y, x_test, y_test = digits_data
    small = factorize(trained_conv_bn_dense, rank={"conv": 4, "hidden": 6}, method="tucker")
    assert [r.method for r in summary(small).layers if r.factored] == ["tucker", "svd"]
    losses = _train(small, x, y, epochs=3)
    assert losses[-1] < losses[0]
    content = to_litert(small, quantize="int8", representative_data=x[:64])
    info = inspect(content)
    assert info.is_quantized and info.float_ops_between_io() == []
    keras_acc = np.mean(np.asarray(small(x_test)).argmax(-1) == y_test)
    assert np.mean(LiteRTModel(content).predict(x_test).argmax(-1) == y_test) > keras_acc - 0.03
    qat = quantize_model(small)
    _train(qat, x, y, epochs=1, lr=1e-4)
    info = inspect(to_litert(qat))
    assert info.is_quantized and info.float_ops_between_io() == []


# -- errors ------------------------------------------------------------------------------


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(4)

    def call(self, x):
        return self.dense(x)


def _small():
    return keras.Sequential([keras.Input((16,)), L.Dense(12, name="d"), L.BatchNormalization(name="bn"),
                             L.Dense(4, name="out")])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"rank": {"d": 13}}, DecompositionError,
     r"Layer 'd' \(Dense\) allows ranks up to 12 \(svd: 12\).*Received: rank\['d'\]=13"),
    ({"rank": 0}, DecompositionError, r"Expected rank to be an int >= 1.*Received: rank=0"),
    ({"rank": 13}, DecompositionError,
     r"rank=13 is larger than every factorable layer allows \(up to d: 12, out: 4\).*Received: rank=13"),
    ({"rank": {"d": 0}}, DecompositionError, r"Received: rank\['d'\]=0"),
    ({"rank": 2.5}, DecompositionError, r"Received: rank=2.5"),
    ({"rank": {"nope": 2}}, DecompositionError,
     r"rank= names layers \['nope'\] that are not factorable.*among \['d', 'out'\]"),
    ({"method": "cp"}, DecompositionError, r"Unknown method.*Received: method='cp'"),
    ({"rank": 4, "energy": 0.9}, DecompositionError, r"at most one of rank=.*Received: rank=4, energy=0.9"),
    ({"energy": 0.9, "compression": 2}, DecompositionError, r"Received: energy=0.9, compression=2"),
    ({"energy": 0}, DecompositionError, r"Expected energy in \(0, 1\].*Received: energy=0"),
    ({"energy": 1.5}, DecompositionError, r"Received: energy=1.5"),
    ({"compression": 0.5}, DecompositionError, r"Expected compression >= 1.*Received: compression=0.5"),
    ({"compression": 100.0}, DecompositionError, r"at rank 1 leaves .*Received: compression=100"),
    ({"layers": "nope"}, LayerSelectionError, r"selects no layer factorize can factor.*Received: no layer"),
    ({"layers": L.BatchNormalization}, LayerSelectionError, r"Received: \['bn \(BatchNormalization\)'\]"),
])
def test_bad_options_are_reported(kwargs, error, message):
    with pytest.raises(error, match=message):
        factorize(_small(), **kwargs)


def test_models_it_cannot_rewrite_are_reported():
    with pytest.raises(UnsupportedModelError, match=r"Expected a keras.Model.*Received: str"):
        factorize("model.keras")
    model = _Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match=r"subclassed.*kmot.core.as_functional\(model\)"):
        factorize(model)
    from kmot.sparsity import prune_low_magnitude

    with pytest.raises(UnsupportedModelError, match=r"holds kmot wrappers .*strip the model first"):
        factorize(prune_low_magnitude(_small()))


def test_errors_are_kmot_errors():
    from kmot import KmotError

    assert issubclass(DecompositionError, KmotError) and issubclass(DecompositionError, ValueError)
    assert decomposition.METHODS == ("auto", "svd", "tucker", "spatial")
