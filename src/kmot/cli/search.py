"""`kmot search`: the least compression of a model that meets every budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from kmot.cli import _common
from kmot.cli._common import _load_runtime, app, check_output_folder, console


@app.command(name="search")
def search_cmd(
    model: Annotated[Path, typer.Argument(help="baseline Keras model (.keras)")],
    budgets: Annotated[Path, typer.Option(help="budgets YAML file (the gate's)")],
    data: Annotated[Path, typer.Option(help="training .npz (arrays x, y)")],
    val: Annotated[Path, typer.Option(help="validation .npz (arrays x, y)")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("kmot-search"),
    trials: Annotated[int, typer.Option(min=0, help="search trials this worker runs")] = 20,
    storage: Annotated[
        str | None, typer.Option(help="Optuna RDB URL shared by workers (default: "
                                         "SQLite in --out)")
    ] = None,
    study: Annotated[str, typer.Option(help="the study's name in the storage")] = "kmot-search",
    space: Annotated[
        Path | None, typer.Option(help="search space YAML (docs/search.md)")
    ] = None,
) -> None:
    """Try compressions from least to most invasive until one meets every budget: exit 0
    when one does, 1 when none does, 2 on bad input, 130 when stopped (results kept)."""
    from kmot.evaluate import load_budgets
    from kmot.search import load_space

    check_output_folder(out)
    load_budgets(budgets)  # bad input fails before TensorFlow loads
    load_space(space)
    _load_runtime()
    from kmot.search import search

    result = search(model, budgets, data=data, val=val, out=out, trials=trials,
                    storage=storage, study=study, space=space,
                    stop=lambda: _common._interrupts.seen)
    for e in result.candidates:
        m = e["metrics"]
        verdict = (Text("meets every budget", "green") if e["meets_budgets"] else
                   Text("ruled out by " + ", ".join(e["ruled_out_by"]), "red"))
        console.print(Text.assemble(
            Text(e["name"]), f": accuracy {m['accuracy']:.4f}, p50 {m['p50_ms']:.3f} ms, "
            f"gzip {m['gzip_bytes']:,} bytes; ", verdict), soft_wrap=True)
    pruned = sum(t.get("state") == "PRUNED" for t in result.trials)
    console.print(f"{len(result.candidates)} candidates, {len(result.trials)} trials "
                  f"({pruned} stopped early), {result.info.get('wall_seconds', 0):.0f} s; "
                  f"results: {out / 'search.json'}, report: {out / 'report' / 'report.html'}",
                  soft_wrap=True)
    if result.chosen:
        console.print(Text.assemble("chosen: ", (result.chosen, "bold green"),
                                    f" -> {out / 'chosen.tflite'} (recipe {out / 'chosen.yaml'})"),
                      soft_wrap=True)
    else:
        console.print(Text("no candidate meets every budget; closest: "
                           + ", ".join(result.to_dict()["closest"]), "red"), soft_wrap=True)
    if result.interrupted or _common._interrupts.seen:
        console.print("interrupted: the results so far are saved", soft_wrap=True)
        raise typer.Exit(130)
    raise typer.Exit(0 if result.passed else 1)
