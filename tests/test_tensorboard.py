"""TensorBoard summaries of pruning, clustering and QAT, read back with TensorBoard's
own event reader."""

import keras
import numpy as np
import pytest

from kmot import clustering, quantization, sparsity
from kmot.errors import TransformError


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    out = {}
    for tag in tags.get("tensors", []):  # tf.summary (TF2) writes scalars as tensors
        out[tag] = [(e.step, float(np.asarray(
            __import__("tensorflow").make_ndarray(e.tensor_proto)))) for e in events.Tensors(tag)]
    for tag in tags.get("scalars", []):
        out[tag] = [(e.step, e.value) for e in events.Scalars(tag)]
    return out


def _fit(model, data, epochs=3, callbacks=()):
    x, y = data[0][:512], data[1][:512]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=list(callbacks))
    return model


def test_pruning_summaries_rise_to_the_target_per_layer(trained_conv_bn_dense, digits_data,
                                                        tmp_path):
    schedule = sparsity.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16, frequency=4)
    pruned = sparsity.prune_low_magnitude(trained_conv_bn_dense, pruning_schedule=schedule)
    _fit(pruned, digits_data, callbacks=[sparsity.PruningSummaries(tmp_path / "logs")])
    found = scalars(tmp_path / "logs")
    pruned_layers = {w.layer.name for w in __import__("kmot").core.find_wrappers(pruned)}
    tags = {t for t in found if t.endswith("/sparsity")}
    assert {t.split("/")[0] for t in tags} == pruned_layers and len(pruned_layers) >= 2
    for tag in tags:
        values = [v for _, v in sorted(found[tag])]
        assert values[0] == pytest.approx(0.0, abs=1e-6)  # written before the first step
        assert values == sorted(values) and values[-1] == pytest.approx(0.75, abs=0.01), tag
    assert len(values) == 4  # train begin and each of 3 epochs


def test_clustering_and_quantization_summaries(trained_conv_bn_dense, digits_data, tmp_path):
    clustered = clustering.cluster_weights(trained_conv_bn_dense, 8)
    _fit(clustered, digits_data, epochs=1,
         callbacks=[clustering.ClusteringSummaries(tmp_path / "c", update_freq=4)])
    found = scalars(tmp_path / "c")
    counts = {t: v for t, series in found.items() for _, v in series[-1:]
              if t.endswith("/distinct_values")}
    assert counts and all(1 < n <= 8 for n in counts.values()), counts
    assert len(next(iter(found.values()))) == 1 + 8 // 4  # begin, then every 4 batches

    qat = quantization.quantize_model(trained_conv_bn_dense)
    _fit(qat, digits_data, epochs=1, callbacks=[quantization.QuantizationSummaries(tmp_path / "q")])
    found = scalars(tmp_path / "q")
    lows = [series[-1][1] for t, series in found.items() if t.endswith("/range_min")]
    highs = [series[-1][1] for t, series in found.items() if t.endswith("/range_max")]
    assert lows and len(lows) == len(highs)
    assert all(lo <= 0 <= hi for lo, hi in zip(lows, highs)) and max(highs) > 0


def test_summaries_refuse_a_model_without_their_wrappers(trained_conv_bn_dense, digits_data,
                                                         tmp_path):
    with pytest.raises(TransformError, match=r"reports no pruning summaries"):
        _fit(keras.models.clone_model(trained_conv_bn_dense), digits_data, epochs=1,
             callbacks=[sparsity.PruningSummaries(tmp_path)])
    with pytest.raises(TransformError, match=r"update_freq='epoch' or a number of batches"):
        sparsity.PruningSummaries(tmp_path, update_freq=0)
