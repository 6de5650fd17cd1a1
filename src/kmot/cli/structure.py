"""`kmot prune-channels`: remove channels from a Keras model (structured pruning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from kmot.cli._common import _load_runtime, app, check_output_file, console, raise_if_interrupted


@app.command(name="prune-channels")
def prune_channels_cmd(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras)")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="where to write the pruned .keras")
    ] = None,
    sparsity: Annotated[float, typer.Option(help="fraction of channels to remove, in [0, 1)")] = 0.5,
    importance: Annotated[str, typer.Option(help="l1 | l2 | bn | taylor")] = "l2",
    allocation: Annotated[str, typer.Option(help="uniform (per group) | global")] = "uniform",
    round_to: Annotated[int, typer.Option(min=1, help="keep a multiple of this many channels")] = 1,
    data: Annotated[
        Optional[Path], typer.Option(help=".npz with arrays x, y (for --importance taylor)")
    ] = None,
    from_logits: Annotated[
        bool, typer.Option(help="taylor: the loss reads the outputs as logits (else as "
                                "probabilities); sparse categorical cross-entropy")
    ] = True,
    groups: Annotated[
        bool, typer.Option("--groups", help="list the channel groups and why, and exit")
    ] = False,
) -> None:
    """Remove the least important channels: a smaller model LiteRT runs faster (fine-tune it next)."""
    from kmot.errors import KmotError

    if not groups and output is None:
        raise KmotError("Expected -o/--output for the pruned .keras (or --groups to only list "
                        "the channel groups). Received: neither.")
    if importance == "taylor" and data is None and not groups:
        raise KmotError("--importance taylor ranks channels by the loss change their removal "
                        "causes, from labelled data. Expected --data train.npz (arrays x and "
                        "y). Received: no --data.")
    if output is not None:
        check_output_file(output, inputs=(model, *((data,) if data else ())))
        if output.suffix != ".keras":
            raise KmotError(f"Expected -o to end in .keras (the pruned model is a Keras model; "
                            f"`kmot convert` makes the .tflite). Received: -o {output}")
    _load_runtime()
    from kmot.core.cost import macs
    from kmot.export import load_model
    from kmot.sparsity import channel_groups, prune_channels

    keras_model = load_model(model)
    if groups:
        for group in channel_groups(keras_model):
            console.print(Text(str(group)), soft_wrap=True)
        return
    xy = _labelled(data, keras_model) if data is not None else None
    loss = None
    if importance == "taylor":
        import keras

        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    with console.status(Text(f"pruning {sparsity:.0%} of the channels of {model.name}")):
        slim = prune_channels(keras_model, sparsity=sparsity, importance=importance, data=xy,
                              round_to=round_to, allocation=allocation, loss=loss)
    raise_if_interrupted()
    from kmot._files import atomic_path

    with atomic_path(output, suffix=".keras") as tmp:
        slim.save(tmp)
    before, after = keras_model.count_params(), slim.count_params()
    console.print(f"wrote {output}: {after:,} parameters ({after / before:.0%} of {before:,}), "
                  f"{macs(slim) / max(macs(keras_model), 1):.0%} of the MACs; fine-tune it, "
                  "then convert", soft_wrap=True)


def _labelled(path: Path, model):
    """``(x, y)`` from an .npz holding arrays x and y, checked to fit the model."""
    from kmot._npz import check_finite, read_npz
    from kmot.errors import KmotError

    arrays = read_npz(path, error=KmotError, what="data file", holding=" with arrays x and y",
                      example="np.savez(path, x=x, y=y)")
    if not {"x", "y"} <= set(arrays):
        raise KmotError(f"Expected --data to hold arrays named 'x' and 'y'. Received: "
                        f"{sorted(arrays)} in {path}")
    x, y = arrays["x"], arrays["y"]
    check_finite({"x": x}, error=KmotError, what="Data", source=str(path))
    from kmot.export.calibration import input_specs

    specs = input_specs(model)
    fits = len(specs) == 1 and x.ndim == len(specs[0].shape) and all(
        want is None or want == got for want, got in zip(specs[0].shape[1:], x.shape[1:]))
    if not fits or y.ndim == 0 or len(y) != len(x):
        raise KmotError(
            f"--data must fit the model: x of one sample per row for its input(s) "
            f"{', '.join(s.describe() for s in specs)}, and one label per row. Received: x of "
            f"shape {x.shape} and y of shape {y.shape} in {path}")
    return x, y
