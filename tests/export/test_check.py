"""`kmot.export.check` and `kmot check`: verdicts against what the converter and runtimes do.

Every verdict is compared with the real thing where this machine can run it: the
LiteRT converter in strict int8 / 16x8 mode and the LiteRT interpreter, the TFLM
interpreter of the tflite-micro package, and ONNX Runtime. The GPU delegate cannot
run here (no GPU), so its verdicts rest on its table alone.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kmot.data.digits import digits_cnn
from kmot.errors import ConversionError, KmotError
from kmot.export import LiteRTModel, inspect, to_litert
from kmot.export.check import TARGETS, check, compatibility_problems
from kmot.export.targets import support_table


@keras.saving.register_keras_serializable("kmot_test_check")
class Sin(keras.layers.Layer):
    def call(self, x):
        return keras.ops.sin(x)


def sin_model():
    inputs = keras.Input((8,))
    hidden = Sin(name="sin")(keras.layers.Dense(8, name="dense")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden), name="with_sin")


def lstm_model(batch_size=None):
    return keras.Sequential([keras.Input((4, 4), batch_size=batch_size),
                             keras.layers.LSTM(8, name="lstm"),
                             keras.layers.Dense(3, name="out")], name="lstm_model")


def tflm_run(content: bytes, x: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(content)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return interpreter.get_output(0)


def verdicts(report):
    return {layer.layer: [(o.op, o.status) for o in layer.ops] for layer in report.layers}


# -- the tables -----------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_every_table_names_its_runtime_source_and_ops(target):
    table = support_table(target)
    assert table["target"] == target
    assert table["runtime"] and table["source"] and table["fix"]
    assert table["missing"] in ("fails", "falls back") and len(table["ops"]) >= 9


def test_litert_and_tflm_tables_hold_builtin_ops_of_the_installed_schema():
    from ai_edge_litert import schema_py_generated as schema

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    assert set(support_table("litert")["ops"]) == builtins - {
        "CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}
    for target in ("litert-int8", "litert-int16x8", "litert-gpu", "tflm"):
        assert set(support_table(target)["ops"]) <= builtins, target


def test_onnx_table_is_the_installed_onnxruntime_cpu_kernels():
    import onnxruntime
    from onnxruntime.capi import _pybind_state

    kernels = {k.op_name for k in _pybind_state.get_all_opkernel_def()
               if k.provider == "CPUExecutionProvider" and k.domain in ("", "ai.onnx")}
    assert set(support_table("onnx")["ops"]) == kernels
    assert onnxruntime.__version__ in support_table("onnx")["runtime"]


def test_int8_table_ops_marked_verified_convert_strictly_to_int8():
    """Ops beyond the quantization spec are listed only as the converter proves them."""
    inputs = keras.Input((4, 4, 8))
    conv = keras.layers.Conv2D(8, 1, name="conv")(inputs)
    act = keras.layers.Activation("hard_swish", name="hswish")(
        keras.layers.LeakyReLU(0.1, name="leaky")(conv))
    x = keras.layers.Add(name="add")([act, inputs])

    class Ops(keras.layers.Layer):  # SPLIT, UNPACK/PACK, STRIDED_SLICE, BATCH_MATMUL
        def call(self, t):
            first, second = keras.ops.split(t, 2, axis=-1)
            t = first * second
            t = keras.ops.stack(keras.ops.unstack(t, axis=1)[::-1], axis=1)[:, 1:3]
            return keras.ops.matmul(t, keras.ops.transpose(t, (0, 1, 3, 2)))

    out = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(Ops(name="ops")(x)))
    model = keras.Model(inputs, out, name="int8_probe")
    data = np.random.default_rng(0).standard_normal((32, 4, 4, 8)).astype("float32")
    strict = inspect(to_litert(model, quantize="int8", representative_data=data))
    verified = {op for op, entry in support_table("litert-int8")["ops"].items()
                if entry["from"] == "verified"}
    assert verified <= set(strict.op_counts)
    assert set(strict.op_counts) <= set(support_table("litert-int8")["ops"])
    assert check(model, "litert-int8").ok
    # 16x8 has no HARD_SWISH kernel: the check says so, and strict conversion fails.
    report = check(model, "litert-int16x8")
    assert ("HARD_SWISH", "falls back") in verdicts(report)["hswish"]
    assert not report.ok and "hswish" in report.message()
    with pytest.raises(ConversionError, match="HARD_SWISH"):
        to_litert(model, quantize="int16x8", representative_data=data)


# -- acceptance models --------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_digits_cnn_runs_on_every_target(target, tmp_path):
    keras.utils.set_random_seed(0)
    model = digits_cnn(compile=False)
    report = check(model, target)
    assert report.ok, report.message()
    assert verdicts(report)["conv1"] and all(l.ops for l in report.layers)
    x = np.random.default_rng(1).random((1, 8, 8, 1), dtype=np.float32)
    expected = np.asarray(model(x))
    if target == "onnx":
        import onnx

        from kmot.export import to_onnx

        to_onnx(model, tmp_path / "m.onnx")  # exports, loads and runs in ONNX Runtime
        names = {node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node}
        assert names <= set(support_table("onnx")["ops"])
    elif target in ("litert-int8", "litert-int16x8"):
        mode = target.split("-")[1]
        content = to_litert(model, quantize=mode, representative_data=np.random.default_rng(
            2).random((32, 8, 8, 1), dtype=np.float32))  # strict: no float fallback
        assert inspect(content).is_quantized
    elif target == "tflm":
        np.testing.assert_allclose(tflm_run(report.content, x), expected, atol=1e-4)
    else:  # litert, and litert-gpu (no GPU here: the float file runs on the CPU)
        np.testing.assert_allclose(LiteRTModel(report.content).predict([x]), expected,
                                   atol=1e-4)


def test_sin_falls_back_for_int8_and_strict_int8_conversion_fails():
    model = sin_model()
    report = check(model, "litert-int8")
    assert not report.ok
    assert verdicts(report)["sin"] == [("SIN", "falls back")]
    assert all(status == "runs" for layer, ops in verdicts(report).items() if layer != "sin"
               for _, status in ops)
    assert "keep_float=['sin']" in report.message()
    data = np.random.default_rng(0).standard_normal((32, 8)).astype("float32")
    with pytest.raises(ConversionError, match="float"):
        to_litert(model, quantize="int8", representative_data=data)
    # The fix it names works, and the hook accepts the layer kept in float.
    to_litert(model, quantize="int8", representative_data=data, keep_float=["sin"])
    assert compatibility_problems(model, "litert-int8", keep_float=("sin",)) is None
    assert check(model, "litert").ok  # float LiteRT has a SIN kernel


def test_ops_the_converter_quantizes_run_in_int8_even_outside_the_table():
    # Conv1D exports as EXPAND_DIMS -> CONV_2D -> SQUEEZE; EXPAND_DIMS is not in the
    # spec's list, yet the strict int8 file holds it with int8 tensors and runs.
    model = keras.Sequential([keras.Input((40, 1)), keras.layers.Conv1D(8, 5, name="conv"),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(10, name="out")])
    report = check(model, "litert-int8")
    assert report.ok, report.message()
    assert "EXPAND_DIMS" in [op for op, _ in verdicts(report)["conv"]]
    x = np.random.default_rng(0).standard_normal((16, 40, 1)).astype("float32")
    content = to_litert(model, quantize="int8", representative_data=x)
    assert np.asarray(LiteRTModel(content).predict([x[:2]])).reshape(2, -1).shape == (2, 10)


def test_lstm_fails_on_tflm_until_the_batch_is_fixed():
    report = check(lstm_model(), "tflm")
    assert not report.ok
    lstm = next(layer for layer in report.layers if layer.layer == "lstm")
    assert ("FILL", "fails") in [(o.op, o.status) for o in lstm.ops]
    assert "batch_size=1" in lstm.fix
    x = np.random.default_rng(0).random((1, 4, 4), dtype=np.float32)
    with pytest.raises(RuntimeError):  # TFLM: "Non-constant >dims< tensor is not supported"
        tflm_run(report.content, x)
    fixed = lstm_model(batch_size=1)
    report = check(fixed, "tflm")
    assert report.ok, report.message()
    np.testing.assert_allclose(tflm_run(report.content, x), np.asarray(fixed(x)), atol=1e-4)


@pytest.mark.slow
def test_mobilenet_v2_runs_on_the_gpu_delegate():
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
    report = check(model, "litert-gpu")
    assert report.ok, report.message()
    ops = {o.op for layer in report.layers for o in layer.ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN"} <= ops
    fused = next(layer for layer in report.layers if layer.layer == "Conv1_relu")
    assert not fused.ops and fused.fused_into == "Conv1 CONV_2D"
    x = np.random.default_rng(0).random((1, 96, 96, 3), dtype=np.float32)
    np.testing.assert_allclose(LiteRTModel(report.content).predict([x]), np.asarray(model(x)),
                               atol=1e-4)  # the checked file itself runs (on the CPU here)


def test_an_op_outside_the_gpu_table_falls_back_to_the_cpu():
    class Flip(keras.layers.Layer):
        def call(self, x):
            return keras.ops.flip(x, axis=-1)

    inputs = keras.Input((8,))
    model = keras.Model(inputs, Flip(name="flip")(keras.layers.Dense(8, name="dense")(inputs)))
    report = check(model, "litert-gpu")
    assert verdicts(report) == {"dense": [("FULLY_CONNECTED", "runs")],
                                "flip": [("REVERSE_V2", "falls back")]}
    assert "CPU" in report.problems[0].fix
    assert check(model, "litert").ok  # the CPU interpreter runs it


def test_an_unknown_target_is_an_error():
    with pytest.raises(KmotError, match=r"Expected target to be one of .*Received: target='gpu'"):
        check(digits_cnn(compile=False), "gpu")


# -- the techniques stop before fine-tuning ----------------------------------------------

def test_quantize_model_and_prune_channels_stop_on_the_check():
    from kmot.errors import TransformError
    from kmot.quantization import QuantizationError, quantize_model
    from kmot.sparsity import prune_channels

    with pytest.raises(QuantizationError, match=r"Layer 'sin' \(Sin\): SIN falls back.*"
                                                r"Received: target='litert-int8'"):
        quantize_model(sin_model(), target="litert-int8")
    # A layer the config keeps in float may fall back.
    assert quantize_model(sin_model(), target="litert-int8", config={"sin": "skip"})
    with pytest.raises(TransformError, match=r"FILL fails.*batch_size=1.*target='tflm'"):
        prune_channels(lstm_model(), sparsity=0.5, target="tflm")


def test_a_recipe_stops_before_fine_tuning(tmp_path):
    from kmot.recipes import RecipeError, optimize

    sin_model().save(tmp_path / "sin.keras")
    x = np.random.default_rng(0).standard_normal((64, 8)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(64) % 3)
    recipe = {"name": "r", "training": {"epochs": 1}, "steps": [{"prune": {}}],
              "export": {"quantize": "int8"}}
    with pytest.raises(RecipeError, match=r"SIN falls back.*checked as litert-int8"):
        optimize(tmp_path / "sin.keras", recipe, train_data=tmp_path / "d.npz",
                 val_data=tmp_path / "d.npz", out_dir=tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").rglob("*.keras"))  # no step ran


# -- the command line ---------------------------------------------------------------------

def test_cli_exit_codes_and_json(tmp_path, cli_fresh):
    digits_cnn(compile=False).save(tmp_path / "digits.keras")
    lstm_model().save(tmp_path / "lstm.keras")
    result = cli_fresh([
        ["kmot", "check", str(tmp_path / "digits.keras"), "--target", "litert"],
        ["kmot", "check", str(tmp_path / "lstm.keras"), "--target", "tflm", "--json"],
        ["kmot", "check", str(tmp_path / "digits.keras"), "--target", "npu"],
        ["kmot", "check", str(tmp_path / "missing.keras"), "--target", "onnx"],
    ])
    (ok, table), (bad, text), (unknown, _), (missing, _) = result["runs"]
    assert ok == 0 and "every op runs" in table and "FULLY_CONNECTED" in table
    assert bad == 1
    found = json.loads(text)
    assert found["ok"] is False and found["target"] == "tflm"
    lstm = next(layer for layer in found["layers"] if layer["layer"] == "lstm")
    assert lstm["status"] == "fails" and "batch_size=1" in lstm["fix"]
    assert unknown == 2 and missing == 2


def test_the_deployment_guide_check_example_runs_as_printed(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                if "check_compatibility" in b]
    exec(compile(block, "deployment.md", "exec"), {})  # a fresh namespace, as pasted
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == ["litert-int8 True", "litert-gpu True", "tflm True"]
    assert printed[3] == "False" and "FILL fails" in printed[4]
