"""Gradual channel pruning: masks ramped in training, shared by coupled layers, removed exactly."""

import itertools

import keras
import numpy as np
import pytest

from kmot import sparsity
from kmot.core import OptimizedLayer
from kmot.core.cost import macs
from kmot.errors import LayerSelectionError, TransformError, UnsupportedModelError

L = keras.layers


def _masks(model) -> dict:
    """``{(layer, weight, axis): mask}`` of every channel mask in `model`."""
    return {(layer.layer.name, key, t.axis): keras.ops.convert_to_numpy(t.mask)
            for layer in model.layers if isinstance(layer, OptimizedLayer)
            for key, chain in layer.transforms.items() for t in chain
            if isinstance(t, sparsity.ChannelMaskTransform)}


def _fit(model, data, *, end_step=10, final=0.5, epochs=1, frequency=2, **options):
    schedule = sparsity.PolynomialDecay(0.0, final, begin_step=0, end_step=end_step,
                                        frequency=frequency)
    masked = sparsity.mask_channels(model, pruning_schedule=schedule, **options)
    masked.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data
    masked.fit(x, y, epochs=epochs, batch_size=64, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    return masked


def residual():
    i = keras.Input((8, 8, 1))
    a = L.BatchNormalization(name="bn_a")(L.Conv2D(8, 3, padding="same", name="a")(i))
    b = L.Conv2D(8, 1, name="b")(i)
    x = L.ReLU()(L.BatchNormalization(name="bn")(L.Add()([a, b])))
    x = L.Conv2D(6, 3, padding="same", activation="sigmoid", name="next")(x)
    return keras.Model(i, L.Dense(10, name="out")(L.GlobalAveragePooling2D()(x)))


def depthwise():
    return keras.Sequential([
        keras.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", name="conv"),
        L.BatchNormalization(), L.ReLU(), L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        L.BatchNormalization(), L.Activation("sigmoid"), L.SeparableConv2D(8, 3, name="sep"),
        L.GlobalAveragePooling2D(), L.Dense(10, name="out")])


def concatenate_flatten():
    i = keras.Input((8, 8, 1))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    b = L.Conv2D(6, 3, padding="same", activation="tanh", name="b")(i)
    x = L.BatchNormalization(name="bn")(L.Concatenate()([a, b]))
    x = L.Conv2D(8, 3, strides=2, name="c")(x)
    x = L.Dense(12, activation="relu", name="hidden")(L.Flatten()(x))
    return keras.Model(i, L.Dense(10, name="out")(x))


def squeeze_excite():
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(12, 3, padding="same", name="conv")(i)
    s = L.Dense(4, activation="relu", name="squeeze")(L.GlobalAveragePooling2D()(x))
    s = L.Reshape((1, 1, 12))(L.Dense(12, activation="sigmoid", name="excite")(s))
    x = L.Multiply()([x, s])
    return keras.Model(i, L.Dense(10, name="out")(L.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def data():
    from kmot.data import digits

    x, y, x_test, _ = digits()
    return (x, y), x_test


@pytest.fixture(scope="module")
def trained_residual(data):
    keras.utils.set_random_seed(0)
    return _fit(residual(), data[0])


def test_coupled_layers_share_one_mask(trained_residual):
    masks = _masks(trained_residual)
    coupled = [("a", "kernel", 3), ("a", "bias", 0), ("bn_a", "gamma", 0), ("bn_a", "beta", 0),
               ("b", "kernel", 3), ("b", "bias", 0), ("bn", "gamma", 0), ("bn", "beta", 0),
               ("next", "kernel", 2)]
    for use in coupled:
        np.testing.assert_array_equal(masks[use], masks[coupled[0]], err_msg=str(use))
    assert masks[coupled[0]].sum() == 4  # 50% of the group's 8 channels
    assert masks[("next", "kernel", 3)].sum() == 3 and masks[("out", "kernel", 0)].sum() == 3
    # Moving statistics are not masked (a mask would freeze their updates).
    assert not any(weight.startswith("moving") for _, weight, _ in masks)


def test_masked_channels_are_zero_wherever_they_are_read(trained_residual, data):
    masked = ~_masks(trained_residual)[("a", "kernel", 3)].astype(bool)
    kernel = trained_residual.get_layer("next_opt").transformed_value(
        trained_residual.get_layer("next_opt").layer.kernel)
    assert np.all(keras.ops.convert_to_numpy(kernel)[:, :, masked, :] == 0)
    features = keras.Model(trained_residual.inputs[0],
                           trained_residual.get_layer("bn_opt").output)(data[1][:16])
    assert np.all(keras.ops.convert_to_numpy(features)[..., masked] == 0)


def test_sparsity_ramps_with_the_schedule(data):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(16, 3, name="conv"),
                              L.BatchNormalization(), L.ReLU(), L.GlobalAveragePooling2D(),
                              L.Dense(10, name="out")])
    schedule = sparsity.PolynomialDecay(0.0, 0.75, begin_step=2, end_step=14, frequency=4)
    masked = sparsity.mask_channels(model, pruning_schedule=schedule, importance="bn")
    masked.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if hasattr(self.model, "jax_state_sync"):  # jax: the variables live in the trainer
                self.model.jax_state_sync()
            seen.append(~_masks(masked)[("conv", "kernel", 3)].astype(bool))

    (x, y), _ = data
    masked.fit(x[:64 * 20], y[:64 * 20], batch_size=64, epochs=1, verbose=0,
               callbacks=[sparsity.UpdatePruningStep(), Record()])
    expected, count = [], 0
    for step in range(20):
        update, target = schedule(step)
        if bool(update):
            count = int(float(target) * 16)
        expected.append(count)
    assert [int(s.sum()) for s in seen] == expected  # updates at steps 2, 6, 10, 14
    assert expected[-1] == 12 and len(set(expected)) > 3
    for before, after in itertools.pairwise(seen):
        assert np.all(after[before])  # a masked channel stays masked


def test_blocks_of_steps_still_reach_the_final_sparsity(data):
    """With steps_per_execution > 1 the callback runs once per block: an update step
    inside a block takes effect before the next one."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(16, 3, name="conv"), L.ReLU(),
                              L.GlobalAveragePooling2D(), L.Dense(10, name="out")])
    schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=7, frequency=2)
    masked = sparsity.mask_channels(model, pruning_schedule=schedule)
    masked.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   steps_per_execution=3)
    (x, y), _ = data
    masked.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    mask = next(t for t in masked.get_layer("conv_opt").transforms["kernel"]
                if isinstance(t, sparsity.ChannelMaskTransform))
    assert int(mask.mask.numpy().sum()) == 8 and int(mask.step.numpy()) == 21


@pytest.mark.parametrize("make", [residual, depthwise, concatenate_flatten, squeeze_excite])
def test_removed_model_computes_what_the_masked_one_does_with_fewer_macs(make, data):
    keras.utils.set_random_seed(1)
    model = make()
    masked = _fit(model, data[0], end_step=6)
    slim = sparsity.remove_masked_channels(masked)
    x = data[1][:64]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(slim(x)), keras.ops.convert_to_numpy(masked(x)), atol=1e-5)
    assert macs(slim) < 0.7 * macs(model)
    assert not any(isinstance(layer, OptimizedLayer) for layer in slim.layers)
    names = [[layer.name for layer in m.layers if not isinstance(layer, L.InputLayer)]
             for m in (slim, model)]
    assert names[0] == names[1]


@pytest.mark.parametrize("options", [{"allocation": "global", "importance": "l1"},
                                     {"round_to": 4, "final": 0.7}])
def test_allocation_and_round_to_match_prune_channels(options, data):
    keras.utils.set_random_seed(2)
    masked = _fit(concatenate_flatten(), data[0], end_step=4, **options)
    slim = sparsity.remove_masked_channels(masked)
    sizes = [slim.get_layer(name).kernel.shape[-1] for name in ("a", "b", "c", "hidden")]
    assert sum(sizes) < 4 + 6 + 8 + 12
    if options.get("round_to"):
        assert sizes == [4, 4, 4, 4]  # 10, 8 and 12 channels rounded up to multiples of 4
    x = data[1][:32]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(slim(x)), keras.ops.convert_to_numpy(masked(x)), atol=1e-5)


def test_masked_model_saves_loads_and_resumes(trained_residual, data, tmp_path):
    trained_residual.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras")
    x = data[1][:32]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(trained_residual(x)), atol=1e-6)
    for use, mask in _masks(trained_residual).items():
        np.testing.assert_array_equal(_masks(loaded)[use], mask)
    step = int(next(t for layer in loaded.layers if isinstance(layer, OptimizedLayer)
                    for chain in layer.transforms.values() for t in chain).step.numpy())
    assert step == 21  # one epoch of 1400 samples at batch 64, the last step run
    slim = sparsity.remove_masked_channels(loaded)
    slim.save(tmp_path / "slim.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.saving.load_model(tmp_path / "slim.keras")(x)),
                               keras.ops.convert_to_numpy(trained_residual(x)), atol=1e-5)


def test_bad_options_and_models_get_clear_errors(data):
    model = residual()
    schedule = sparsity.ConstantSparsity(0.5, 0, frequency=1)
    with pytest.raises(TransformError, match="must be a kmot.sparsity schedule"):
        sparsity.mask_channels(model, pruning_schedule=0.5)
    with pytest.raises(sparsity.ScheduleError, match=r"number in \[0, 1\)"):
        sparsity.mask_channels(model, pruning_schedule=sparsity.ConstantSparsity(1.0))
    for bad in ("l3", "taylor", lambda slices: 0.0):
        with pytest.raises(TransformError, match="Unknown importance for channel masks"):
            sparsity.mask_channels(model, pruning_schedule=schedule, importance=bad)
    with pytest.raises(TransformError, match="round_to a positive integer"):
        sparsity.mask_channels(model, pruning_schedule=schedule, round_to=0)
    with pytest.raises(TransformError, match="allocation in"):
        sparsity.mask_channels(model, pruning_schedule=schedule, allocation="per-layer")
    with pytest.raises(LayerSelectionError, match="selects no prunable channel group"):
        sparsity.mask_channels(model, pruning_schedule=schedule, layers="out")
    dense_only = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    with pytest.raises(UnsupportedModelError, match="no prunable channel group.*channel_groups"):
        sparsity.mask_channels(dense_only, pruning_schedule=schedule)
    pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    with pytest.raises(UnsupportedModelError, match="strip the model first"):
        sparsity.mask_channels(pruned, pruning_schedule=schedule)
    with pytest.raises(TransformError, match="holds no channel masks"):
        sparsity.remove_masked_channels(model)

    masked = sparsity.mask_channels(model, pruning_schedule=schedule)
    with pytest.raises(UnsupportedModelError, match="remove_masked_channels"):
        sparsity.prune_channels(masked)
    with pytest.raises(TransformError, match=r"No channel .* is masked.*UpdatePruningStep"):
        sparsity.remove_masked_channels(masked)  # never trained
    masked.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x, y), _ = data
    masked.fit(x[:128], y[:128], batch_size=64, verbose=0)  # the callback forgotten
    with pytest.raises(TransformError, match=r"No channel .* is masked.*UpdatePruningStep"):
        sparsity.remove_masked_channels(masked)
    stacked = sparsity.prune_low_magnitude(masked, pruning_schedule=schedule)
    with pytest.raises(TransformError, match="channel masks only.*PruneTransform"):
        sparsity.remove_masked_channels(stacked)


def test_masks_that_disagree_are_not_removed(trained_residual):
    wrapper = trained_residual.get_layer("b_opt")
    mask = next(t for t in wrapper.transforms["bias"] if isinstance(t, sparsity.ChannelMaskTransform))
    before = mask.mask.numpy()
    try:
        mask.mask.assign(1 - before)
        with pytest.raises(TransformError, match="masks of model .* disagree"):
            sparsity.remove_masked_channels(trained_residual)
    finally:
        mask.mask.assign(before)
