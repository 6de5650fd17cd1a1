"""kmot on the jax and torch backends: train there, export to LiteRT from there.

Each backend runs in its own Python process (Keras picks its backend at import,
from KERAS_BACKEND). The export itself runs in a TensorFlow child of that process
(`kmot.export.backend_bridge`); these tests check what comes out of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax", reason="the jax extra: pip install -e '.[jax]'")
pytest.importorskip("torch", reason="the torch extra (CPU build; see .ci/run)")

_EXPORT_JOB = textwrap.dedent("""
    import json
    import keras
    import numpy as np
    from kmot import clustering, errors, quantization, sparsity
    from kmot.data import digits
    from kmot.export import LiteRTModel, inspect, to_litert

    x, y, x_test, y_test = digits(seed=0)
    x, y = x[:640], y[:640]
    keras.utils.set_random_seed(0)
    base = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="logits"),
    ])

    def fit(model):
        model.compile(keras.optimizers.Adam(3e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=64, epochs=2, verbose=0)
        return model

    def kernels(content):
        return [w for w in inspect(content).weights if not w.is_bias and len(w.shape) > 1]

    fit(base)
    out = {"backend": keras.backend.backend()}
    pruned = sparsity.strip_pruning(fit(sparsity.prune_low_magnitude(
        base, pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))))
    out["pruned_sparsity"] = min(w.sparsity for w in kernels(to_litert(pruned)))
    clustered = clustering.strip_clustering(fit(clustering.cluster_weights(
        base, number_of_clusters=8)))
    out["clustered_unique"] = max(w.unique_values for w in kernels(to_litert(clustered)))
    qat = fit(quantization.quantize_model(base))
    content = to_litert(qat, representative_data=x_test[:8])
    info = inspect(content)
    out["qat_float_ops"] = [op.name for op in info.float_ops_between_io()]
    out["qat_kernel_dtypes"] = sorted({w.dtype for w in kernels(content)})
    keras_top = np.argmax(keras.ops.convert_to_numpy(qat(x_test, training=False)), -1)
    out["qat_agreement"] = float(np.mean(LiteRTModel(content).predict(x_test).argmax(-1)
                                         == keras_top))
    try:
        to_litert(base, quantize="int8")
    except errors.KmotError as err:
        out["error"] = [type(err).__name__, str(err)[:80]]
    print("RESULT " + json.dumps(out))
""")


def _run(backend: str, code: str, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, env={**os.environ, "KERAS_BACKEND": backend, **env}, timeout=900)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_trained_on_a_backend_export_as_on_tensorflow(backend):
    out = _run(backend, _EXPORT_JOB)
    assert out["backend"] == backend
    assert out["pruned_sparsity"] >= 0.49  # every kernel keeps its zeros in the file
    assert out["clustered_unique"] <= 8  # and its 8 shared values
    assert out["qat_float_ops"] == []  # fully int8, ranges from training, no calibration
    assert out["qat_kernel_dtypes"] == ["int8"]
    assert out["qat_agreement"] >= 0.99
    # An error raised in the TensorFlow process comes back as the same class.
    assert out["error"][0] == "CalibrationDataError"
    assert "representative data" in out["error"][1]


_DISTRIBUTED_JOB = textwrap.dedent("""
    import json
    import keras
    import numpy as np
    from kmot import clustering, quantization, sparsity
    from kmot.data import digits

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    x, y, _, _ = digits(seed=0)
    x, y = x[:512], y[:512]

    def states(wrap):
        keras.utils.set_random_seed(0)
        model = wrap(keras.Sequential([
            keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.Flatten(), keras.layers.Dense(10, name="logits")]))
        model.compile(keras.optimizers.Adam(3e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        # keyed by position and name: layer names take a counter that grows per model
        return {f"{i}:{v.name}": np.asarray(v.numpy()).tolist()
                for i, v in enumerate(model.variables)
                if any(k in v.name for k in ("mask", "centroids", "range_"))}

    wraps = {
        "prune": lambda m: sparsity.prune_low_magnitude(
            m, pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1)),
        "cluster": lambda m: clustering.cluster_weights(m, number_of_clusters=8),
        "qat": lambda m: quantization.quantize_model(m),
    }
    out = {"single": {k: states(w) for k, w in wraps.items()}}
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        out["devices"] = len(devices)
        out["distributed"] = {k: states(w) for k, w in wraps.items()}
    else:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        out["devices"] = strategy.num_replicas_in_sync
        with strategy.scope():
            out["distributed"] = {k: states(w) for k, w in wraps.items()}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_distributed_fine_tune_matches_single_device(backend):
    """DataParallel (jax) / MirroredStrategy (tensorflow) on 2 virtual CPU devices."""
    import numpy as np

    out = _run(backend, _DISTRIBUTED_JOB, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert out["devices"] == 2
    for technique, single in out["single"].items():
        distributed = out["distributed"][technique]
        assert single and sorted(single) == sorted(distributed), technique
        for path, value in single.items():
            if "mask" in path:  # the same weights pruned
                assert np.mean(np.equal(value, distributed[path])) >= 0.99, path
            else:  # centroids and activation ranges, up to float noise
                np.testing.assert_allclose(distributed[path], value, rtol=1e-3, atol=1e-4,
                                           err_msg=path)


_WORKER_JOB = textwrap.dedent("""
    import json, os, signal
    import keras, numpy as np
    from kmot import errors
    from kmot.export import backend_bridge, to_litert

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    out = {"before": backend_bridge.worker_pid()}
    first = to_litert(model)
    out["first"] = backend_bridge.worker_pid()
    to_litert(model, quantize="int8", representative_data=x)
    out["second"] = backend_bridge.worker_pid()
    try:
        to_litert(model, quantize="int8")
    except errors.KmotError as err:
        out["error"] = type(err).__name__
    out["after_error"] = backend_bridge.worker_pid()
    os.kill(out["after_error"], signal.SIGKILL)
    os.waitpid(out["after_error"], 0)
    out["same_file"] = to_litert(model) == first
    out["restarted"] = backend_bridge.worker_pid()
    print("RESULT " + json.dumps(out))
""")


def test_one_tensorflow_child_serves_every_export_and_a_dead_one_is_replaced():
    out = _run("jax", _WORKER_JOB)
    assert out["before"] is None and out["first"] is not None
    # the second conversion, and a conversion that fails, reuse the same child
    assert out["first"] == out["second"] == out["after_error"]
    assert out["error"] == "CalibrationDataError"
    # killed between conversions, it is started again and writes the same file
    assert out["same_file"] and out["restarted"] not in (None, out["first"])
