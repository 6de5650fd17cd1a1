"""`check`: will a deployment target run this model's ops, asked before any training.

The model is converted once for the target, untrained (weights play no part in
which ops it becomes): to a float LiteRT file for ``litert``, ``litert-gpu`` and
``tflm``; to an int8 or 16x8 one, calibrated on synthetic inputs with float
fallback allowed, for ``litert-int8`` / ``litert-int16x8`` (so the converter
itself says which ops stay float); to ONNX for ``onnx``. Each op is mapped back
to the Keras layer it came from by the converter's tensor names
(`kmot.export.naming`) and looked up in the target's support table
(`kmot.export.targets`). A model the converter rejects is reported too: its
layers then get the converter's message.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from kmot.errors import ConversionError, KmotError
from kmot.export.targets import TARGETS, support_table

__all__ = ["TARGETS", "CheckReport", "LayerCheck", "OpCheck", "check", "compatibility_problems"]

RUNS, FALLS_BACK, FAILS = "runs", "falls back", "fails"
_ORDER = {RUNS: 0, FALLS_BACK: 1, FAILS: 2}
_BOUNDARY = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class OpCheck:
    """One op of the converted model: its name, verdict and why."""

    op: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class LayerCheck:
    """One Keras layer: the ops it became and the worst verdict among them."""

    layer: str
    class_name: str
    ops: list[OpCheck]
    fix: str = ""
    fused_into: str = ""  # e.g. "conv1 CONV_2D": its compute lives in another layer's op

    @property
    def status(self) -> str:
        return max((o.status for o in self.ops), key=_ORDER.get, default=RUNS)


@dataclass(frozen=True)
class CheckReport:
    """What `check` found for one model and one target."""

    model: str
    target: str
    runtime: str
    layers: list[LayerCheck]
    conversion_error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: The converted file the verdicts were read from (LiteRT bytes; None for ONNX).
    content: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the target runs every op as asked (exit code 0 of `kmot check`)."""
        return self.conversion_error is None and all(l.status == RUNS for l in self.layers)

    @property
    def problems(self) -> list[LayerCheck]:
        """The layers with an op that falls back or fails."""
        return [l for l in self.layers if l.status != RUNS]

    def message(self) -> str:
        """One paragraph naming each problem and its fix (empty when `ok`)."""
        if self.ok:
            return ""
        parts = [f"Model '{self.model}' is not ready for target {self.target} ({self.runtime})."]
        if self.conversion_error:
            parts.append(f"Conversion failed: {self.conversion_error}")
        for l in self.problems:
            bad = [o for o in l.ops if o.status != RUNS]
            ops = ", ".join(f"{o.op} {o.status}" + (f" ({o.reason})" if o.reason else "") for o in bad)
            parts.append(f"Layer '{l.layer}' ({l.class_name}): {ops}. Fix: {l.fix}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "runtime": self.runtime,
                "ok": self.ok, "conversion_error": self.conversion_error, "notes": self.notes,
                "layers": [{**asdict(l), "status": l.status} for l in self.layers]}


def check(model: keras.Model | str | os.PathLike, target: str) -> CheckReport:
    """Checks which of the model's ops `target` runs, per Keras layer.

    Args:
        model: a Keras model or a ``.keras`` file (untrained is fine).
        target: one of `TARGETS`: ``"litert"``, ``"litert-int8"``,
            ``"litert-int16x8"``, ``"litert-gpu"``, ``"tflm"``, ``"onnx"``.

    Returns:
        A `CheckReport`; ``.ok`` is False when an op would fall back or fail.

    Raises:
        KmotError: an unknown target, or a model kmot cannot load.

    Example:
        >>> report = check(model, "litert-int8")  # doctest: +SKIP
        >>> assert report.ok, report.message()
    """
    if target not in TARGETS:
        raise KmotError(f"Expected target to be one of {list(TARGETS)}. Received: target={target!r}")
    from kmot.export.litert import _as_graph, load_model

    model = _as_graph(load_model(model), None)
    table = support_table(target)
    if table["conversion"] == "onnx":
        ops, error, notes, content = *_onnx_ops(model), None
    else:
        ops, error, notes, content = _litert_ops(model, table, target)
    return CheckReport(model.name, target, table["runtime"], _by_layer(model, ops, table),
                       error, notes, content)


def compatibility_problems(model: keras.Model, target: str, *,
                           keep_float: tuple[str, ...] = ()) -> str | None:
    """`check`'s message when `target` would not run the model as asked, else None.

    For techniques to call before fine-tuning, so a model the target cannot run
    stops early. Layers in `keep_float` may stay float (int8 targets).
    """
    report = check(model, target)
    left = [l for l in report.problems if l.layer not in keep_float or l.status == FAILS]
    if report.conversion_error is None and not left:
        return None
    return CheckReport(report.model, target, report.runtime, left,
                       report.conversion_error).message()


# -- LiteRT ------------------------------------------------------------------------------

def _synthetic(model: keras.Model) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    batch = []
    for t in model.inputs:
        shape = [8] + [1 if d is None else int(d) for d in t.shape[1:]]
        if "int" in str(t.dtype):
            batch.append(np.zeros(shape, str(t.dtype)))
        else:
            batch.append(rng.standard_normal(shape).astype("float32"))
    return batch


def _litert_ops(model, table, target):
    """(op, layers, verdict override) triples of the converted model, or a conversion error."""
    from kmot.export.inspect import inspect
    from kmot.export.litert import to_litert

    mode = None if table["conversion"] == "float32" else table["conversion"]
    kwargs: dict[str, Any] = {}
    notes: list[str] = []
    content = None
    if mode:
        data = _synthetic(model)
        kwargs = {"quantize": mode, "representative_data": data[0] if len(data) == 1 else tuple(data)}
        with contextlib.suppress(ConversionError):  # strict: what the user gets by default
            content = to_litert(model, verify=False, **kwargs)
        # Else float fallback shows which ops stay float (with it allowed, the converter
        # may also leave an op float that strict mode quantizes).
        kwargs["allow_float_fallback"] = True
    try:
        if content is None:
            content = to_litert(model, verify=False, **kwargs)
    except ConversionError as err:
        try:  # Flex ops let the converter finish, and name what the builtins lack
            content = to_litert(model, verify=False, allow_select_tf_ops=True, **kwargs)
        except ConversionError:
            return [], _first_lines(str(err)), notes, None
        notes.append("converted only with TensorFlow (Flex) ops allowed")
    info = inspect(content)
    floats = {(op.subgraph, op.index) for op in info.float_ops_between_io()} if mode else set()
    out = []
    for op in info.ops:
        override = None
        if (op.subgraph, op.index) in floats:
            override = (FALLS_BACK, "the converter left it in float: no integer kernel for it here")
        elif mode and op.name not in table["ops"]:
            # The file itself is the authority: the installed converter gave this op
            # integer tensors, and the interpreter has the kernel it asked for.
            override = (RUNS, f"quantized by the installed converter ({mode})")
        elif op.name in table["ops"]:
            missing = [i for i in table["ops"][op.name].get("constant_inputs", [])
                       if i < len(op.inputs) and not op.inputs[i].is_constant]
            if missing:
                override = (FAILS, table["ops"][op.name]["condition"])
        if mode and op.name in _BOUNDARY and override is None:
            continue  # the quantized I/O boundary, not a layer's compute
        # Output names first; a weight's name where an output has none (a graph output).
        names = [t.name for t in op.outputs] + [t.name for t in op.inputs if t.is_constant]
        out.append((op.name, names, override))
    return out, None, notes, content


# -- ONNX --------------------------------------------------------------------------------

def _onnx_ops(model):
    from pathlib import Path

    from kmot._tempdirs import temporary_directory
    from kmot.export.onnx import to_onnx

    with temporary_directory("check") as work:
        path = Path(work) / "model.onnx"
        try:
            to_onnx(model, path, verify=True)
        except ConversionError as err:
            return [], _first_lines(str(err)), []
        import onnx

        graph = onnx.load(str(path)).graph
    ops = [(n.op_type, [n.name, *n.output], None if n.domain in ("", "ai.onnx") else
            (FAILS, f"operator of domain {n.domain!r}")) for n in graph.node]
    return ops, None, []


# -- verdicts by layer -------------------------------------------------------------------

def _by_layer(model, ops, table) -> list[LayerCheck]:
    from kmot.core.selection import walk_layers
    from kmot.export.naming import layer_names, layers_of_tensor

    names = layer_names(model)
    outputs = {}
    for i, t in enumerate(model.outputs):
        history = getattr(t, "_keras_history", None)
        if history is not None:
            outputs[f"StatefulPartitionedCall:{i}"] = history.operation.name
            outputs[f"output_{i}"] = history.operation.name
    per_layer: dict[str, list[OpCheck]] = {}
    fused: dict[str, str] = {}
    for name, tensors, override in ops:
        found = next((f for t in tensors if (f := layers_of_tensor(t, names, model.name) or
                                             ([outputs[t]] if t in outputs else []))), [])
        owner = found[0] if found else "(unnamed)"
        for other in found[1:]:
            fused.setdefault(other, f"{owner} {name}")
        if override is not None:
            verdict = OpCheck(name, *override)
        elif name in table["ops"]:
            verdict = OpCheck(name, RUNS, table["ops"][name].get("condition", ""))
        elif name.startswith("Flex"):
            verdict = OpCheck(name, FAILS, "a TensorFlow (Flex) op: not a builtin of this runtime")
        else:
            verdict = OpCheck(name, table["missing"], "not in the target's op table")
        per_layer.setdefault(owner, []).append(verdict)
    checks = []
    for layer in [*walk_layers(model)]:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        found = per_layer.pop(layer.name, [])
        checks.append(_layer_check(layer.name, type(layer).__name__, found, table,
                                   "" if found else fused.get(layer.name, "")))
    checks += [_layer_check(name, "-", found, table) for name, found in per_layer.items()]
    return checks


def _layer_check(name, class_name, ops, table, fused_into="") -> LayerCheck:
    fix = ""
    if any(o.status != RUNS for o in ops):
        failing = [o for o in ops if o.status != RUNS]
        own = [table["ops"][o.op]["fix"] for o in failing if "fix" in table["ops"].get(o.op, {})]
        if own:
            fix = own[0]
        elif any(o.op.startswith("Flex") for o in failing):
            fix = ("Replace the layer with one built from builtin ops; for LSTM/GRU, give the "
                   "input a fixed number of time steps.")
        else:
            fix = table["fix"].replace("{layer}", name)
    return LayerCheck(name, class_name, ops, fix, fused_into)


def _first_lines(text: str, limit: int = 600) -> str:
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[:limit] + ("..." if len(text) > limit else "")
