"""QAT of a transformer encoder (Embedding, MultiHeadAttention, LayerNormalization, GELU):
strict int8 with no representative data, agreeing with the QAT Keras model; pruning and
clustering of EinsumDense kernels, inside MultiHeadAttention too."""

import keras
import numpy as np
from export.test_transformer import encoder

import kmot
from kmot.export import LiteRTModel, inspect, to_litert
from kmot.quantization.attention import QuantizedMultiHeadAttention


def _task(n, seed):
    """How often the most frequent token occurs (at most 2, 3, 4 or more): each
    position must compare its token with the others'. The majority class is 53%."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, (n, 8)).astype("int32")
    counts = np.stack([(x == k).sum(1) for k in range(6)], 1).max(1)
    return x, (np.clip(counts, 2, 4) - 2).astype("int32")


def _compile(model):
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)
    return model


def test_qat_transformer_is_strict_int8_and_agrees_with_keras(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _task(1024, 0)
    x_test, y_test = _task(512, 1)
    model = _compile(encoder(vocab=6, length=8, classes=3))
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert float_accuracy > 0.6, float_accuracy  # beyond the majority class (53%)

    qat = _compile(kmot.quantization.quantize_model(model, strict=True))
    assert sum(isinstance(getattr(layer, "layer", layer), QuantizedMultiHeadAttention)
               for layer in qat.layers) == 2
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    expected = qat.predict(x_test, verbose=0)

    content = to_litert(qat)  # int8 from the QAT ranges, strict: raises on a float op
    info = inspect(content)
    assert info.is_quantized and info.float_ops_between_io() == []
    assert {"BATCH_MATMUL", "SOFTMAX", "GATHER"} <= set(info.op_counts)
    predicted = LiteRTModel(content).predict(x_test)
    agreement = np.mean(predicted.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.98, agreement
    int8_accuracy = np.mean(predicted.argmax(-1) == y_test)
    assert int8_accuracy >= float_accuracy - 0.05, (int8_accuracy, float_accuracy)

    path = tmp_path / "qat.keras"
    qat.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x_test, verbose=0),
                               expected, atol=1e-5)


def test_einsum_dense_kernels_prune_and_cluster_inside_attention_too():
    keras.utils.set_random_seed(1)
    x, y = _task(256, 2)
    i = keras.Input((8,), dtype="int32")
    h = keras.layers.Embedding(6, 16)(i)
    h = keras.layers.MultiHeadAttention(2, 8)(h, h)
    h = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 12), bias_axes="d")(h)
    model = keras.Model(i, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h)))
    pruned = _compile(kmot.sparsity.prune_low_magnitude(
        model, pruning_schedule=kmot.sparsity.ConstantSparsity(0.5, 0)))
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[kmot.sparsity.UpdatePruningStep()])
    stripped = kmot.sparsity.strip_pruning(pruned)
    clustered = _compile(kmot.clustering.cluster_weights(stripped, number_of_clusters=16,
                                                         preserve_sparsity=True))
    clustered.fit(x, y, epochs=1, verbose=0)
    final = kmot.clustering.strip_clustering(clustered)
    found = {}
    for layer in final.layers:
        for v in layer.weights:
            if v.path.endswith("kernel"):
                found[v.path] = np.asarray(v.numpy())
    einsum_keys = [k for k in found if "attention" in k or "einsum" in k]
    assert len(einsum_keys) == 5, sorted(found)  # query, key, value, output; EinsumDense
    for key in einsum_keys:
        value = found[key]
        assert abs(np.mean(value == 0) - 0.5) < 0.05, (key, np.mean(value == 0))
        assert np.unique(value).size <= 16, (key, np.unique(value).size)
