"""What tfmot users write, natively: default schedule, NumPy integers, per-layer
wrapping in clone_model, positional cluster counts, the XNNPACK pruning policy."""

import keras
import numpy as np
import pytest

from kmot import clustering, sparsity
from kmot.core import find_wrappers
from kmot.errors import LayerSelectionError, TransformError


def test_default_schedule_is_constant_half(trained_conv_bn_dense):
    pruned = sparsity.prune_low_magnitude(trained_conv_bn_dense)
    schedules = {t.schedule.get_config()["target_sparsity"] for w in find_wrappers(pruned)
                 for chain in w.transforms.values() for t in chain}
    assert schedules == {0.5}


def test_numpy_scalars_are_accepted_by_schedules():
    s = sparsity.PolynomialDecay(np.float32(0.1), np.float64(0.5), np.int64(0), np.int32(20),
                                 power=np.int8(3), frequency=np.int16(5))
    assert (s.end_step, s.frequency, s.power) == (20, 5, 3.0)
    assert type(s.end_step) is int  # saved configs stay plain JSON
    with pytest.raises(sparsity.ScheduleError, match=r"`end_step` must be an int >= 0"):
        sparsity.ConstantSparsity(0.5, 0, np.float32(2.5))
    with pytest.raises(sparsity.ScheduleError, match=r"target_sparsity=(np\.)?True"):
        sparsity.ConstantSparsity(np.bool_(True))


def test_every_technique_wraps_single_layers_in_clone_function(trained_conv_bn_dense,
                                                               digits_data):
    x, y = digits_data[0][:256], digits_data[1][:256]

    def prune_dense(layer):
        return sparsity.prune_low_magnitude(layer) if isinstance(layer, keras.layers.Dense) \
            else layer

    def cluster_dense(layer):
        return clustering.cluster_weights(layer, 8) if isinstance(layer, keras.layers.Dense) \
            else layer

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned = keras.models.clone_model(trained_conv_bn_dense, clone_function=prune_dense)
    pruned.compile("adam", loss)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)
    by_layer = {w.layer: w.sparsity for w in sparsity.summary(stripped).weights}
    dense = [l.name for l in stripped.layers if isinstance(l, keras.layers.Dense)]
    assert dense and all(by_layer[n] == pytest.approx(0.5, abs=0.01) for n in dense)
    assert all(v == 0 for n, v in by_layer.items() if n not in dense)

    clustered = keras.models.clone_model(trained_conv_bn_dense, clone_function=cluster_dense)
    clustered.compile("adam", loss)
    clustered.fit(x, y, epochs=1, verbose=0)
    final = clustering.strip_clustering(clustered)
    for layer in final.layers:
        if isinstance(layer, keras.layers.Dense):
            assert len(np.unique(layer.kernel.numpy())) <= 8
    with pytest.raises(LayerSelectionError, match=r"'relu' \(ReLU\) has no clusterable weights"):
        clustering.cluster_weights(trained_conv_bn_dense.get_layer("relu"), 8)


def test_xnnpack_policy_prunes_only_pointwise_convs():
    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(i)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(16, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(10, name="head")(x))
    pruned = sparsity.prune_low_magnitude(model, pruning_policy="xnnpack")
    assert [w.layer.name for w in find_wrappers(pruned)] == ["pw"]
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(TransformError, match=r"prunes only 1x1 Conv2D layers"):
        sparsity.prune_low_magnitude(plain, pruning_policy="xnnpack")
    with pytest.raises(TransformError, match=r"Unknown pruning_policy"):
        sparsity.prune_low_magnitude(model, pruning_policy="gpu")
