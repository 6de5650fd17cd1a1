"""`kmot check`: which of a model's ops a deployment target runs, before any training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from kmot.cli._common import _load_runtime, app, console

_STYLE = {"runs": "green", "falls back": "yellow", "fails": "bold red"}


@app.command(name="check")
def check_cmd(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras), trained or not")],
    target: Annotated[str, typer.Option(
        help="litert | litert-int8 | litert-int16x8 | litert-gpu | tflm | onnx")],
    as_json: Annotated[bool, typer.Option("--json", help="print the verdicts as JSON")] = False,
) -> None:
    """Check that TARGET runs every op of MODEL: exit 0 if so, 1 if an op falls back or fails."""
    from kmot.errors import KmotError
    from kmot.export.targets import TARGETS

    if target not in TARGETS:
        raise KmotError(f"Expected --target to be one of {', '.join(TARGETS)}. "
                        f"Received: --target {target}")
    _load_runtime()
    from kmot.export import load_model
    from kmot.export.check import check

    keras_model = load_model(model)
    with console.status(Text(f"converting {model.name} for {target}")):
        report = check(keras_model, target)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        raise typer.Exit(0 if report.ok else 1)
    table = Table(title=f"{report.model} on {target}")
    for column in ("layer", "class", "ops", "verdict", "fix"):
        table.add_column(column)
    for layer in report.layers:
        ops = Text()
        counts: dict[tuple[str, str, str], int] = {}  # one entry per op and verdict, in order
        for op in layer.ops:
            key = (op.op, op.status, op.reason if op.status != "runs" else "")
            counts[key] = counts.get(key, 0) + 1
        for i, ((name, status, reason), n) in enumerate(counts.items()):
            ops.append((", " if i else "") + name + (f" x{n}" if n > 1 else ""),
                       style=_STYLE[status])
            if reason:
                ops.append(f" ({status}: {reason})")
        if not layer.ops:
            ops.append(f"fused into {layer.fused_into}" if layer.fused_into else "no op")
        table.add_row(Text(layer.layer), Text(layer.class_name), ops,
                      Text(layer.status, style=_STYLE[layer.status]), Text(layer.fix))
    console.print(table)
    console.print(Text(f"runtime: {report.runtime}"), soft_wrap=True)
    if report.conversion_error:
        console.print(Text.assemble(("conversion failed: ", "bold red"), report.conversion_error),
                      soft_wrap=True)
    for note in report.notes:
        console.print(Text(f"note: {note}"), soft_wrap=True)
    verdict = "every op runs" if report.ok else f"{len(report.problems) or 'the model'} " \
        "layer(s) would fall back or fail" if report.problems else "the conversion fails"
    console.print(Text(f"{target}: {verdict}", style="green" if report.ok else "bold red"))
    raise typer.Exit(0 if report.ok else 1)
