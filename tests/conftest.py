"""Shared fixtures: real data (sklearn digits) and small real Keras models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from keras import ops

from kmot.core import WeightTransform


@keras.saving.register_keras_serializable(package="kmot_tests")
class Scale(WeightTransform):
    """A real transform for tests: multiplies a weight by a stored factor."""

    def __init__(self, factor=0.5):
        self.factor = factor

    def build(self, weight, add_weight):
        self.scale = add_weight(
            "scale", (), initializer=keras.initializers.Constant(self.factor)
        )

    def __call__(self, value, *, training):
        return ops.multiply(value, self.scale)

    def get_config(self):
        return {"factor": self.factor}


@pytest.fixture(scope="session")
def scale_transform():
    return Scale


@pytest.fixture(scope="session")
def digits_data():
    from kmot.data import digits

    return digits()


def conv_bn_dense(name="conv_bn_dense"):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=name,
    )


@pytest.fixture(scope="session")
def trained_conv_bn_dense(digits_data):
    """Conv2D + BatchNorm + Dense trained 4 epochs on digits (~0.95 accuracy)."""
    keras.utils.set_random_seed(1)
    x_train, y_train, _, _ = digits_data
    model = conv_bn_dense()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    return model


def max_abs_diff(a, b):
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    as_numpy = keras.ops.convert_to_numpy  # (a torch tensor that requires grad has no __array__)
    return max(float(np.max(np.abs(as_numpy(x) - as_numpy(y)))) for x, y in zip(a, b))


@pytest.fixture(scope="session")
def diff():
    return max_abs_diff


def run_cli_fresh(argvs: list[list[str]]) -> dict:
    """Runs `kmot.cli.main()` once per argv in one fresh Python process.

    Returns ``{"runs": [[exit_code, stdout], ...], "heavy": [...]}``, where heavy
    lists which of TensorFlow, Keras and LiteRT the process ended up importing.
    """
    import json
    import subprocess
    import sys

    code = (
        "import contextlib, io, json, sys\n"
        "import kmot.cli\n"
        "runs = []\n"
        f"for args in {argvs!r}:\n"
        "    sys.argv, out = args, io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            kmot.cli.main()\n"
        "        except SystemExit as exit:\n"
        "            runs.append([exit.code, out.getvalue()])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules]\n"
        "print(json.dumps({'runs': runs, 'heavy': heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def cli_fresh():
    return run_cli_fresh


def pytest_sessionfinish(session):
    """Under pytest-xdist, a worker hands its fault-injection totals to the controller."""
    from faults import COUNTS

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fault_counts"] = dict(COUNTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller adds up each xdist worker's fault-injection totals."""
    from faults import COUNTS

    COUNTS.update(getattr(node, "workeroutput", {}).get("fault_counts", {}))


def pytest_terminal_summary(terminalreporter):
    """Prints the fault-injection and fuzz totals (see tests/faults.py), if any ran."""
    from faults import COUNTS

    if COUNTS:
        terminalreporter.write_line(
            f"fault injection: {COUNTS['kills']} kills injected, {COUNTS['bad_inputs']} bad "
            f"inputs tried, {COUNTS['failures']} failures")
