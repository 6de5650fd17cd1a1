"""A transformer encoder (Embedding, MultiHeadAttention, LayerNormalization, GELU,
GlobalAveragePooling1D) exports in float and strict int8 by post-training quantization."""

import keras
import numpy as np

from kmot.export import LiteRTModel, inspect, to_litert


def encoder(vocab=20, length=12, dim=16, classes=5):
    i = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocab, dim)(i)
    for _ in range(2):
        a = keras.layers.MultiHeadAttention(2, dim // 2)(x, x)
        x = keras.layers.LayerNormalization()(x + a)
        f = keras.layers.Dense(dim, activation="gelu")(keras.layers.Dense(32)(x))
        x = keras.layers.LayerNormalization()(x + f)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(i, keras.layers.Dense(classes)(x))


def test_transformer_encoder_exports_float_and_full_int8():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (256, 12)).astype("int32")
    y = x.max(1) % 5
    model = encoder()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    expected = model.predict(x, verbose=0)
    float_file = LiteRTModel(to_litert(model))
    np.testing.assert_allclose(float_file.predict(x), expected, atol=1e-4)
    content = to_litert(model, quantize="int8", representative_data=x)  # strict: raises if not
    info = inspect(content)
    assert info.is_quantized and info.float_ops_between_io() == []
    assert "NEG" not in {op.name for op in info.ops}  # LayerNormalization as SUB, not NEG
    agreement = np.mean(LiteRTModel(content).predict(x).argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.9, agreement
