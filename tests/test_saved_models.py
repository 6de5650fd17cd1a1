"""Models saved mid-training load in a fresh process after only `import kmot`, and
`kmot convert` converts them: every class a kmot .keras file names is registered."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kmot import clustering, quantization, sparsity
from kmot.export import inspect

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(name="relu"),
        keras.layers.SeparableConv2D(8, 3, name="sep"), keras.layers.Flatten(),
        keras.layers.Dense(10, name="logits")])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits_data):
    x, y = digits_data[0][:256], digits_data[1][:256]
    folder = tmp_path_factory.mktemp("saved")
    keras.utils.set_random_seed(0)
    schedule = sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=2)
    models = {
        "pruned": sparsity.prune_low_magnitude(_model(), pruning_schedule=schedule),
        "clustered": clustering.cluster_weights(_model(), number_of_clusters=8),
        "qat": quantization.quantize_model(_model()),
    }
    for name, model in models.items():
        model.compile("adam", LOSS)
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # mid-training: 4 of 100 steps
        model.save(folder / f"{name}.keras")
        np.save(folder / f"{name}_out.npy", model.predict(x[:16], verbose=0))
    np.save(folder / "x.npy", x[:16])
    return folder


LOAD = """
import json, sys
import numpy as np
import kmot, keras
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
diff = float(np.abs(model.predict(x, verbose=0) - np.load(sys.argv[3])).max())
print(json.dumps({"classes": sorted({type(l).__name__ for l in model.layers}), "diff": diff}))
"""


@pytest.mark.parametrize("name", ["pruned", "clustered", "qat"])
def test_saved_mid_training_loads_after_import_kmot(saved, name):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(saved / f"{name}.keras"), str(saved / "x.npy"),
         str(saved / f"{name}_out.npy")], capture_output=True, text=True, env=env, cwd=saved)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["diff"] < 1e-5
    expected = {"pruned": "OptimizedLayer", "clustered": "OptimizedLayer", "qat": "ActivationQuantizer"}
    assert expected[name] in loaded["classes"]


@pytest.mark.parametrize("name", ["pruned", "clustered", "qat"])
def test_kmot_convert_converts_each(saved, name):
    out = saved / f"{name}.tflite"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "kmot.cli", "convert", str(saved / f"{name}.keras"),
                             "-o", str(out)], capture_output=True, text=True, env=env, cwd=saved)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    info = inspect(out)
    if name == "qat":
        assert info.float_ops_between_io() == []  # int8 from the learned ranges
    else:
        assert not info.is_quantized and "CONV_2D" in info.op_counts
