"""`kmot` command line: parse, call the public API, print. Nothing else lives here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from kmot.errors import KmotError

app = typer.Typer(
    help="kmot: make Keras 3 models smaller and faster for LiteRT, with proof.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
    raise typer.Exit(2)


def _load_runtime() -> None:
    """Imports LiteRT and Keras (and so TensorFlow) with their start-up log lines hidden.

    Only the commands that convert, run or train models call it, first thing:
    `gate` and `registry` read JSON, YAML and SQLite and never load TensorFlow.
    """
    from kmot._quiet import captured_output

    with captured_output():
        import ai_edge_litert.interpreter  # noqa: F401
        import keras  # noqa: F401


def load_npz_inputs(path: Path, model) -> object:
    """Model inputs from an ``.npz``: one array, an ``x`` array, or one per input name."""
    import numpy as np

    from kmot.errors import CalibrationDataError

    if not path.is_file():
        raise CalibrationDataError(f"No such data file. Expected an .npz file. Received: {path}")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    names = [t.name for t in model.inputs]
    if len(names) > 1 and all(n in arrays for n in names):
        return tuple(arrays[n] for n in names)
    if len(names) == 1:
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        for key in ("x", names[0]):
            if key in arrays:
                return arrays[key]
    raise CalibrationDataError(
        f"Cannot tell which arrays of {path.name} are the model's inputs. Expected a "
        f"single array, an array named 'x' (one-input model) or one array per input "
        f"name {names}. Received: arrays {sorted(arrays)}"
    )


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the .tflite")],
    quantize: Annotated[
        Optional[str], typer.Option(help="float16 | dynamic | int8 | int16x8 (default: float32)")
    ] = None,
    calibration: Annotated[
        Optional[Path], typer.Option(help=".npz of representative inputs (int8, int16x8)")
    ] = None,
    samples: Annotated[int, typer.Option(help="calibration sample budget")] = 200,
    io_type: Annotated[
        str, typer.Option(help="input/output dtype: float32, int8, uint8 or int16")
    ] = "float32",
    keep_float: Annotated[
        Optional[list[str]], typer.Option(help="layer to keep in float (repeatable)")
    ] = None,
    allow_float_fallback: Annotated[bool, typer.Option(help="let ops with no int kernel stay float")] = False,
    select_tf_ops: Annotated[bool, typer.Option(help="allow TensorFlow (Flex) ops")] = False,
) -> None:
    """Convert a Keras model to LiteRT, optionally quantized."""
    _load_runtime()
    from kmot.export import inspect, load_model, to_litert

    try:
        keras_model = load_model(model)
        data = load_npz_inputs(calibration, keras_model) if calibration else None
        with console.status(f"converting {model.name} ({quantize or 'float32'})"):
            content = to_litert(
                keras_model, output, quantize=None if quantize in (None, "float32") else quantize,
                representative_data=data, num_calibration_samples=samples,
                inference_input_type=io_type, inference_output_type=io_type,
                keep_float=keep_float or (), allow_float_fallback=allow_float_fallback,
                allow_select_tf_ops=select_tf_ops,
            )
    except KmotError as err:
        _fail(err)
    info = inspect(content)
    console.print(
        f"wrote {output}: {info.size_bytes:,} bytes ({info.gzip_bytes:,} gzip), "
        f"{len(info.ops)} ops, float compute ops: {len(info.float_ops) if info.is_quantized else 'all'}"
    )


@app.command(name="inspect")
def inspect_cmd(
    model: Annotated[Path, typer.Argument(help=".tflite file")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a .tflite file's ops, dtypes, float fallbacks, weight sparsity and size."""
    _load_runtime()
    from kmot.export import inspect

    try:
        info = inspect(model)
    except KmotError as err:
        _fail(err)
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    console.print(f"[bold]{model.name}[/]: {info.size_bytes:,} bytes, {info.gzip_bytes:,} gzip -9 bytes")
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
    worst: Annotated[int, typer.Option(help="how many lossiest layers to name")] = 3,
) -> None:
    """Per-layer error of post-training quantization (RMSE, SNR): what to keep in float."""
    _load_runtime()
    from kmot.export import load_model
    from kmot.export.layer_error import quantization_error

    try:
        keras_model = load_model(model)
        data = load_npz_inputs(calibration, keras_model)
        with console.status("measuring per-layer error"):
            report = quantization_error(keras_model, data, quantize=quantize)
    except KmotError as err:
        _fail(err)
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
    epochs: Annotated[int, typer.Option(help="baseline (and student) training epochs")] = 15,
    finetune_epochs: Annotated[int, typer.Option(help="fine-tuning epochs per technique")] = 5,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Every technique on the bundled digits data: report, gate, registry push and promote."""
    _load_runtime()
    from kmot.demo import run_demo

    with console.status("starting") as status:
        result = run_demo(out, epochs=epochs, finetune_epochs=finetune_epochs, seed=seed,
                          progress=lambda message: status.update(message))
    result["report"].print_table(console)
    console.print(result["gate"].table())
    if result["registered"] is not None:
        version = result["registered"]
        console.print(f"registry: pushed and promoted {version.name} v{version.version} "
                      f"({out / 'registry'})")
    console.print(f"report: {out / 'report' / 'report.html'}", soft_wrap=True)


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help=".tflite / .keras files (named by stem)")],
    data: Annotated[Path, typer.Option(help=".npz with 'x' (or one array per input) and 'y'")],
    out: Annotated[Path, typer.Option(help="folder for report.json, report.md, report.html")],
    baseline: Annotated[
        Optional[str], typer.Option(help="baseline name (default: the first)")
    ] = None,
    metric: Annotated[
        Optional[list[str]], typer.Option(help="accuracy | topK | mae | rmse (repeatable)")
    ] = None,
    runs: Annotated[int, typer.Option(help="timed runs per model")] = 100,
    warmup: Annotated[int, typer.Option(help="untimed runs before timing")] = 10,
    threads: Annotated[int, typer.Option(help="interpreter threads")] = 1,
    batch_size: Annotated[int, typer.Option(help="samples per timed run")] = 1,
    memory: Annotated[bool, typer.Option(help="measure peak memory in child processes")] = True,
) -> None:
    """Compare models on the same data: metrics, fidelity, latency, memory, size, ops."""
    _load_runtime()
    from kmot.evaluate import compare

    try:
        report = compare(list(models), data, baseline=baseline, metrics=metric or ("accuracy",),
                         runs=runs, warmup=warmup, threads=threads, batch_size=batch_size,
                         memory=memory)
        paths = report.save(out)
    except KmotError as err:
        _fail(err)
    report.print_table(console)
    console.print(f"wrote {paths['json']}, {paths['markdown'].name}, {paths['html'].name}",
                  soft_wrap=True)


@app.command(name="gate")
def gate_cmd(
    report: Annotated[Path, typer.Argument(help="report.json (or the folder holding it)")],
    budgets: Annotated[Path, typer.Option(help="budgets YAML file")],
    candidate: Annotated[Optional[str], typer.Option(help="check only this candidate")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON")] = False,
) -> None:
    """Check a report against budgets: exit 0 if all pass, 1 if any fails, 2 on bad input."""
    from kmot.evaluate import gate

    try:
        result = gate(report, budgets, candidate=candidate)
    except KmotError as err:
        _fail(err)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(result.table())
        for check in result.failures:
            console.print(f"[bold red]FAIL[/] {check.candidate} {check.budget}: {check.detail}",
                          soft_wrap=True)
    raise typer.Exit(0 if result.passed else 1)


@app.command()
def optimize(
    model: Annotated[Path, typer.Argument(help="baseline Keras model (.keras)")],
    recipe: Annotated[Path, typer.Option(help="recipe YAML")],
    data: Annotated[Path, typer.Option(help="training .npz (arrays x, y)")],
    val: Annotated[Path, typer.Option(help="validation .npz (arrays x, y)")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("kmot-out"),
    registry_root: Annotated[Optional[Path], typer.Option(help="registry folder")] = None,
) -> None:
    """Run a recipe: fine-tuning steps, export, evaluation, gate, registry (resumable)."""
    _load_runtime()
    from kmot.recipes import optimize as run_recipe

    try:
        result = run_recipe(model, recipe, train_data=data, val_data=val, out_dir=out,
                            registry_root=registry_root)
    except KmotError as err:
        _fail(err)
    reused = sum(s["reused"] for s in result.steps)
    console.print(f"steps: {len(result.steps)} ({reused} reused) -> {result.tflite}")
    if result.report is not None:
        result.report.print_table()
        console.print(f"report: {out / 'report' / 'report.html'}")
    if result.gate is not None:
        verdict = "[green]passed[/]" if result.gate.passed else "[red]failed[/]"
        console.print(f"gate: {verdict}")
    if result.registered is not None:
        console.print(f"registered {result.registered.name} v{result.registered.version}")
    if not result.passed:
        raise typer.Exit(1)


registry_app = typer.Typer(
    help="Model registry: versioned, checksummed artifacts; promote, rollback, pull.",
    no_args_is_help=True,
)
RegistryRoot = Annotated[
    Optional[Path],
    typer.Option("--root", help="registry folder (default: $KMOT_REGISTRY or ~/.kmot/registry)"),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def _open_registry(root: Optional[Path]):
    from kmot.registry import Registry

    return Registry(root)


def _short_metrics(metrics: dict, limit: int = 3) -> str:
    return "\n".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:limit])


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


@registry_app.command(name="push")
def registry_push(
    artifact: Annotated[Path, typer.Argument(help="the file to store (e.g. model.tflite)")],
    name: Annotated[str, typer.Option(help="model name")],
    report: Annotated[Optional[Path], typer.Option(help="report.json to keep with it")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(help="label (repeatable)")] = None,
    meta: Annotated[
        Optional[list[str]], typer.Option(help="KEY=VALUE metadata (repeatable)")
    ] = None,
    promote: Annotated[bool, typer.Option(help="also make it the production version")] = False,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Store an artifact as the next version of NAME (checksummed, content-addressed)."""
    from kmot.errors import RegistryError

    try:
        pairs = [item.split("=", 1) for item in meta or ()]
        if any(len(pair) != 2 or not pair[0] for pair in pairs):
            raise RegistryError(f"Expected --meta KEY=VALUE. Received: --meta {meta}")
        registry = _open_registry(root)
        version = registry.push(artifact, name=name, report=report, metadata=dict(pairs),
                                tags=tag or ())
        if promote:
            version = registry.promote(name, version.version)
    except KmotError as err:
        _fail(err)
    if as_json:
        print(json.dumps(version.to_dict(), indent=2))
        return
    console.print(f"pushed {version.label}: {version.size_bytes:,} bytes, sha256 "
                  f"{version.sha256[:12]}" + (" (production)" if promote else ""), soft_wrap=True)


@registry_app.command(name="list")
def registry_list(
    name: Annotated[Optional[str], typer.Argument(help="list this model's versions")] = None,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """List models (name, versions, production), or every version of NAME."""
    try:
        registry = _open_registry(root)
        rows = registry.models() if name is None else registry.list(name)
    except KmotError as err:
        _fail(err)
    if as_json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if name is None:
        table = Table(title=f"models in {registry.root} (times UTC)")
        for col in ("name", "versions", "latest", "production", "updated"):
            table.add_column(col)
        for m in rows:
            production = "-" if m.production_version is None else f"v{m.production_version}"
            table.add_row(m.name, str(m.num_versions), f"v{m.latest_version}", production,
                          _when(m.updated_at))
    else:
        table = Table(title=f"{name} (* = production; times UTC)")
        tagged = any(v.tags for v in rows)
        for col in ("version", "created", "sha256"):
            table.add_column(col, no_wrap=True)
        for col in ("source", "metrics", *(("tags",) if tagged else ())):
            table.add_column(col, overflow="fold")
        for v in rows:
            cells = [f"v{v.version}{' *' if v.production else ''}", _when(v.created_at),
                     v.sha256[:10], v.source, _short_metrics(v.metrics)]
            table.add_row(*cells, *((", ".join(v.tags),) if tagged else ()))
    console.print(table)


@registry_app.command(name="show")
def registry_show(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[
        Optional[int], typer.Argument(help="default: production, else latest")
    ] = None,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Show one version: checksum, size, source, metrics, metadata (--json: and the report)."""
    try:
        v = _open_registry(root).show(name, version)
    except KmotError as err:
        _fail(err)
    if as_json:
        print(json.dumps(v.to_dict(), indent=2))
        return
    table = Table(title=v.label + (" (production)" if v.production else ""), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = {"sha256": v.sha256, "bytes": f"{v.size_bytes:,}", "created": v.created_at,
            "source": v.source, "tags": ", ".join(v.tags) or "-",
            "report": "attached (--json)" if v.report is not None else "-"}
    rows.update({f"metric {k}": f"{x:.6g}" for k, x in v.metrics.items()})
    rows.update({f"meta {k}": json.dumps(x) if not isinstance(x, str) else x
                 for k, x in v.metadata.items()})
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


@registry_app.command(name="promote")
def registry_promote(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version to make production")],
    root: RegistryRoot = None,
) -> None:
    """Make VERSION the production version of NAME (the previous one stays for rollback)."""
    try:
        v = _open_registry(root).promote(name, version)
    except KmotError as err:
        _fail(err)
    console.print(f"{v.label} is production")


@registry_app.command(name="rollback")
def registry_rollback(
    name: Annotated[str, typer.Argument(help="model name")],
    root: RegistryRoot = None,
) -> None:
    """Make the previous production version of NAME current again (atomic)."""
    try:
        v = _open_registry(root).rollback(name)
    except KmotError as err:
        _fail(err)
    console.print(f"rolled back: {v.label} is production again")


@registry_app.command(name="history")
def registry_history(
    name: Annotated[str, typer.Argument(help="model name")],
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Every promote and rollback of NAME, oldest first."""
    try:
        events = _open_registry(root).history(name)
    except KmotError as err:
        _fail(err)
    if as_json:
        print(json.dumps([e.to_dict() for e in events], indent=2))
        return
    table = Table(title=f"{name}: production history")
    for col in ("at", "action", "from", "to"):
        table.add_column(col)
    for e in events:
        table.add_row(e.at, e.action, "-" if e.previous is None else f"v{e.previous}",
                      f"v{e.version}")
    console.print(table)


@registry_app.command(name="pull")
def registry_pull(
    name: Annotated[str, typer.Argument(help="model name")],
    output: Annotated[
        str, typer.Option("-o", "--output", help="file, or folder (existing or ending in /)")
    ] = ".",
    version: Annotated[
        Optional[int], typer.Option(help="default: production, else latest")
    ] = None,
    root: RegistryRoot = None,
) -> None:
    """Copy a version's artifact out, verifying its sha256 (nothing is written on mismatch)."""
    try:
        path = _open_registry(root).pull(name, version, dest=output)
    except KmotError as err:
        _fail(err)
    console.print(f"wrote {path} (sha256 verified)", soft_wrap=True)


app.add_typer(registry_app, name="registry")


def main() -> None:
    # The CLI's output is for people: keep TensorFlow's C++ logging quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app()


if __name__ == "__main__":
    main()
