"""`kmot` commands on models and reports: convert (LiteRT, ONNX, SavedModel), inspect,
layer-error, demo, bench, gate, optimize."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from kmot.cli._common import (
    _load_runtime,
    app,
    check_output_file,
    check_output_folder,
    console,
    load_npz_inputs,
    progress_lines,
    raise_if_interrupted,
)

FORMATS = ("litert", "onnx", "saved_model")


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras)")],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="where to write: a .tflite, an .onnx, or a SavedModel folder")],
    quantize: Annotated[
        Optional[str], typer.Option(help="LiteRT: float16 | dynamic | int8 | int16x8; "
                                         "ONNX: dynamic | int8 (default: float32)")
    ] = None,
    calibration: Annotated[
        Optional[Path], typer.Option(help=".npz of representative inputs (int8, int16x8)")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="calibration sample budget")] = 200,
    io_type: Annotated[
        str, typer.Option(help="LiteRT input/output dtype: float32, int8, uint8 or int16")
    ] = "float32",
    keep_float: Annotated[
        Optional[list[str]], typer.Option(help="LiteRT: layer to keep in float (repeatable)")
    ] = None,
    allow_float_fallback: Annotated[bool, typer.Option(
        help="LiteRT: let ops with no int kernel stay float")] = False,
    select_tf_ops: Annotated[bool, typer.Option(help="LiteRT: allow TensorFlow (Flex) ops")] = False,
    fused_lstm: Annotated[bool, typer.Option(
        help="LiteRT: each LSTM as one fused UNIDIRECTIONAL_SEQUENCE_LSTM op (batch 1; "
             "reset its state before each sequence)")] = False,
    format: Annotated[Optional[str], typer.Option(
        "--format", help="litert | onnx | saved_model (default: onnx for an -o ending in "
                         ".onnx, litert otherwise)")] = None,
) -> None:
    """Convert a Keras model to LiteRT (optionally quantized), ONNX or a SavedModel."""
    target = _convert_format(format, output, quantize, io_type=io_type, keep_float=keep_float,
                             allow_float_fallback=allow_float_fallback,
                             select_tf_ops=select_tf_ops, fused_lstm=fused_lstm)
    inputs = (model, *((calibration,) if calibration else ()))
    if target == "saved_model":
        check_output_folder(output, option="-o")
    else:
        check_output_file(output, inputs=inputs)
    _load_runtime()
    from kmot.export import load_model

    keras_model = load_model(model)
    data = load_npz_inputs(calibration, keras_model) if calibration else None
    if target != "litert":
        _convert_other(target, keras_model, model, output, quantize, data, samples)
        return
    from kmot._files import write_atomic
    from kmot.export import inspect, to_litert

    with console.status(Text(f"converting {model.name} ({quantize or 'float32'})")):
        content = to_litert(
            keras_model, None, quantize=None if quantize in (None, "float32") else quantize,
            representative_data=data, num_calibration_samples=samples,
            inference_input_type=io_type, inference_output_type=io_type,
            keep_float=keep_float or (), allow_float_fallback=allow_float_fallback,
            allow_select_tf_ops=select_tf_ops, fused_lstm=fused_lstm,
        )
    raise_if_interrupted()  # a Ctrl-C the converter swallowed still writes nothing
    write_atomic(output, content)
    info = inspect(content)
    console.print(
        f"wrote {output}: {info.size_bytes:,} bytes ({info.gzip_bytes:,} gzip), "
        f"{len(info.ops)} ops, float compute ops: {len(info.float_ops) if info.is_quantized else 'all'}"
    )


def _convert_format(format: Optional[str], output: Path, quantize: Optional[str],
                    **litert_only: object) -> str:
    """The export format ``convert`` writes, its options checked against it."""
    from kmot.errors import KmotError

    if format is None:
        format = "onnx" if output.suffix == ".onnx" else "litert"
    if format not in FORMATS:
        raise KmotError(f"Expected --format to be one of {', '.join(FORMATS)}. "
                        f"Received: --format {format}")
    if format == "litert":
        return format
    defaults = {"io_type": "float32", "keep_float": None, "allow_float_fallback": False,
                "select_tf_ops": False, "fused_lstm": False}
    given = [f"--{k.replace('_', '-')}" for k, v in litert_only.items() if v not in (defaults[k], [])]
    if given:
        raise KmotError(f"Expected LiteRT options only with --format litert. Received: "
                        f"{', '.join(given)} with --format {format}. Drop them, or convert "
                        "to LiteRT.")
    allowed = {"onnx": (None, "float32", "dynamic", "int8"), "saved_model": (None, "float32")}
    if quantize not in allowed[format]:
        fix = ("use --quantize dynamic or int8" if format == "onnx"
               else "a SavedModel keeps float weights; quantize with --format litert or onnx")
        raise KmotError(f"Expected --quantize to suit --format {format}. Received: --quantize "
                        f"{quantize}: {fix}.")
    if format == "onnx" and output.suffix != ".onnx":
        raise KmotError(f"Expected -o to name an .onnx file for --format onnx. Received: -o "
                        f"{output}. Give e.g. -o {output.with_suffix('.onnx')}.")
    return format


def _convert_other(format: str, keras_model: object, model: Path, output: Path,
                   quantize: Optional[str], data: object, samples: int) -> None:
    """``convert --format onnx | saved_model``: the export, then what it wrote."""
    from kmot.evaluate.runners import folder_size
    from kmot.export import to_onnx, to_saved_model

    quantize = None if quantize in (None, "float32") else quantize
    with console.status(Text(f"exporting {model.name} ({format}, {quantize or 'float32'})")):
        if format == "onnx":
            to_onnx(keras_model, output, quantize=quantize, representative_data=data,
                    num_calibration_samples=samples)
        else:
            to_saved_model(keras_model, output)
    raise_if_interrupted()
    if format == "onnx":
        import gzip

        content = output.read_bytes()
        size, packed = len(content), len(gzip.compress(content, compresslevel=9, mtime=0))
    else:
        stats = folder_size(output)
        size, packed = stats.bytes, stats.gzip_bytes
    console.print(f"wrote {output}: {size:,} bytes ({packed:,} gzip), {format}")


@app.command(name="inspect")
def inspect_cmd(
    model: Annotated[Path, typer.Argument(help=".tflite file")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a .tflite file's ops, dtypes, float fallbacks, weight sparsity and size."""
    _load_runtime()
    from kmot.export import inspect

    info = inspect(model)
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    console.print(Text.assemble((model.name, "bold"),
                                f": {info.size_bytes:,} bytes, {info.gzip_bytes:,} gzip -9 bytes"))
    ops = Table(title="ops")
    for col in ("op", "count"):
        ops.add_column(col)
    for name, count in sorted(info.op_counts.items(), key=lambda kv: -kv[1]):
        ops.add_row(name, str(count))
    console.print(ops)
    weights = Table(title="weights")
    for col in ("tensor", "op", "dtype", "shape", "sparsity", "unique"):
        weights.add_column(col, overflow="fold")
    for w in info.weights:
        if not w.is_bias:
            weights.add_row(w.name.split(";")[0], w.op, w.dtype, str(tuple(w.shape)),
                            f"{w.sparsity:.1%}", str(w.unique_values))
    console.print(weights)
    if info.is_quantized:
        floats = info.float_ops
        console.print(
            f"float compute ops in this quantized model: {len(floats)}"
            + ("".join(f"\n  #{op.index} {op.name}" for op in floats))
        )


@app.command(name="layer-error")
def layer_error_cmd(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras)")],
    calibration: Annotated[Path, typer.Option(help=".npz of representative inputs")],
    quantize: Annotated[str, typer.Option(help="int8 | int16x8 | dynamic | float16")] = "int8",
    worst: Annotated[int, typer.Option(min=1, help="how many lossiest layers to name")] = 3,
) -> None:
    """Per-layer error of post-training quantization (RMSE, SNR): what to keep in float."""
    _load_runtime()
    from kmot.export import load_model
    from kmot.export.layer_error import quantization_error

    keras_model = load_model(model)
    data = load_npz_inputs(calibration, keras_model)
    with console.status(Text("measuring per-layer error")):
        report = quantization_error(keras_model, data, quantize=quantize)
    table = Table(title=f"{quantize} vs float, {report.num_samples} samples")
    for col in ("#", "op", "layer", "rmse", "SNR dB"):
        table.add_column(col)
    for r in report.layers:
        table.add_row(str(r.op_index), r.op, r.label, f"{r.rmse:.4g}", f"{r.snr_db:.1f}")
    console.print(table)
    names = [r.label for r in report.worst(worst)]
    console.print(f"largest SNR drops: {', '.join(names)} -> try --keep-float on them")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("kmot-demo"),
    epochs: Annotated[
        int, typer.Option(min=1, help="baseline (and student) training epochs")] = 15,
    finetune_epochs: Annotated[
        int, typer.Option(min=1, help="fine-tuning epochs per technique")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="random seed")] = 0,
) -> None:
    """Every technique on the bundled digits data: report, gate, registry push and promote."""
    check_output_folder(out)
    _load_runtime()
    from kmot.demo import run_demo

    with progress_lines("starting") as progress:
        result = run_demo(out, epochs=epochs, finetune_epochs=finetune_epochs, seed=seed,
                          progress=progress)
    console.print(result["gate"].table())
    result["report"].print_table(console)
    console.print(f"report: {out / 'report' / 'report.html'}", soft_wrap=True)


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help=".tflite / .keras / .onnx files or SavedModel folders (named by stem)")],
    data: Annotated[Path, typer.Option(help=".npz with 'x' (or one array per input) and 'y'")],
    out: Annotated[Path, typer.Option(help="folder for report.json, report.md, report.html")],
    baseline: Annotated[
        Optional[str], typer.Option(help="baseline name (default: the first), or "
                                         "registry:NAME[@VERSION] to measure against the "
                                         "registry's production (or that) version")
    ] = None,
    metric: Annotated[
        Optional[list[str]], typer.Option(help="accuracy | topK | mae | rmse (repeatable)")
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="timed runs per model")] = 100,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs before timing")] = 10,
    threads: Annotated[int, typer.Option(min=1, help="interpreter threads")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="samples per timed run")] = 1,
    memory: Annotated[bool, typer.Option(help="measure peak memory in child processes")] = True,
    registry_root: Annotated[
        Optional[str], typer.Option(help="registry folder or mlflow://host:port, for "
                                         "--baseline registry:NAME")
    ] = None,
    remote: Annotated[
        Optional[str], typer.Option(help="ssh://user@host[:port]: measure latency and memory "
                                         "there (.tflite only; needs Python and "
                                         "ai-edge-litert)")
    ] = None,
    remote_identity: Annotated[
        Optional[Path], typer.Option(help="private key for --remote (ssh -i)")] = None,
    remote_known_hosts: Annotated[
        Optional[Path], typer.Option(help="known-hosts file to check --remote's host key "
                                          "against (checking is always strict)")] = None,
    remote_python: Annotated[
        str, typer.Option(help="the Python command on --remote")] = "python3",
) -> None:
    """Compare models on the same data: metrics, fidelity, latency, memory, size, ops."""
    check_output_folder(out)
    from kmot._tempdirs import temporary_directory

    far = None
    if remote is not None or remote_identity or remote_known_hosts:
        from kmot.evaluate.remote import Remote

        far = Remote(remote or "", python=remote_python,
                     identity=str(remote_identity) if remote_identity else None,
                     known_hosts=str(remote_known_hosts) if remote_known_hosts else None)
    with temporary_directory("bench") as workdir:
        pulled, made = _from_registry(baseline, registry_root, Path(workdir))
        _load_runtime()
        from kmot.evaluate import compare

        candidates = list(models)
        if pulled:  # the production version first, named as the registry names it
            candidates = {**pulled, **{m.stem: m for m in models}}
            if len(candidates) != len(pulled) + len(models):
                from kmot.errors import EvaluationError

                raise EvaluationError(f"Expected distinct file names. Received: {models}")
        report = compare(candidates, data,
                         baseline=next(iter(pulled), None) or baseline,
                         metrics=metric or ("accuracy",), runs=runs, warmup=warmup,
                         threads=threads, batch_size=batch_size, memory=memory,
                         provenance=made, remote=far)
    raise_if_interrupted()
    paths = report.save(out)
    report.print_table(console)
    console.print(f"wrote {paths['json']}, {paths['markdown'].name}, {paths['html'].name}",
                  soft_wrap=True)


def _from_registry(baseline: str | None, root: str | None, workdir: Path):
    """``({label: pulled file}, {label: provenance})`` for ``registry:NAME[@VERSION]``."""
    if baseline is None or not baseline.startswith("registry:"):
        return {}, {}
    from kmot.errors import RegistryError
    from kmot.registry import Registry

    spec = baseline[len("registry:"):]
    name, _, version = spec.partition("@")
    if not name or (version and not version.isdigit()):
        raise RegistryError(f"Expected --baseline registry:NAME or registry:NAME@VERSION "
                            f"(VERSION a number). Received: --baseline {baseline}")
    registry = Registry(root)
    chosen = registry.show(name, int(version) if version else None)
    label = f"{chosen.name} v{chosen.version}" + (" (production)" if chosen.production else "")
    path = registry.pull(name, chosen.version, dest=workdir / f"registry-{chosen.version}"
                         / chosen.source)
    return {label: path}, {label: {"source": f"registry {registry.root} {chosen.label}",
                                   "source_sha256": chosen.sha256}}


@app.command(name="gate")
def gate_cmd(
    report: Annotated[Path, typer.Argument(help="report.json (or the folder holding it)")],
    budgets: Annotated[Path, typer.Option(help="budgets YAML file")],
    candidate: Annotated[Optional[str], typer.Option(help="check only this candidate")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON")] = False,
) -> None:
    """Check a report against budgets: exit 0 if all pass, 1 if any fails, 2 on bad input."""
    from kmot.evaluate import gate

    result = gate(report, budgets, candidate=candidate)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(result.table())
        for check in result.failures:
            console.print(Text.assemble(("FAIL", "bold red"),
                                        f" {check.candidate} {check.budget}: {check.detail}"),
                          soft_wrap=True)
    raise typer.Exit(0 if result.passed else 1)


@app.command()
def optimize(
    model: Annotated[Path, typer.Argument(help="baseline Keras model (.keras)")],
    recipe: Annotated[Path, typer.Option(help="recipe YAML")],
    data: Annotated[Path, typer.Option(help="training .npz (arrays x, y)")],
    val: Annotated[Path, typer.Option(help="validation .npz (arrays x, y)")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("kmot-out"),
    registry_root: Annotated[
        Optional[str], typer.Option(help="registry folder or mlflow://host:port")
    ] = None,
) -> None:
    """Run a recipe: fine-tuning steps, export, evaluation, gate, registry (resumable)."""
    check_output_folder(out)
    _load_runtime()
    from kmot.recipes import optimize as run_recipe

    result = run_recipe(model, recipe, train_data=data, val_data=val, out_dir=out,
                        registry_root=registry_root)
    reused = sum(s["reused"] for s in result.steps)
    console.print(f"steps: {len(result.steps)} ({reused} reused) -> {result.tflite}")
    if result.report is not None:
        result.report.print_table(console)
        console.print(f"report: {out / 'report' / 'report.html'}")
    if result.gate is not None:
        verdict = ("passed", "green") if result.gate.passed else ("failed", "red")
        console.print(Text.assemble("gate: ", verdict))
    if result.registered is not None:
        console.print(f"registered {result.registered.name} v{result.registered.version}")
    if not result.passed:
        raise typer.Exit(1)
