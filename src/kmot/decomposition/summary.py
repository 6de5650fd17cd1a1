"""What factorization does to each layer: rank, kept energy, parameters and MACs."""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Any

import keras

__all__ = ["LayerFactorization", "FactorizationSummary", "summary", "summarize", "record"]

#: The summary of each model `factorize` returned (kept while the model lives; not saved).
_RECORDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayerFactorization:
    """One selected layer with a kernel, factored or left whole.

    Attributes:
        layer: the layer's name (the last factor keeps it).
        type: its class name.
        method: ``"svd"``, ``"tucker"`` or ``"spatial"``; None when left whole.
        ranks: ``(rank,)`` or Tucker-2's ``(input rank, output rank)``; () when whole.
        kept_energy: ``||W_approx||^2 / ||W||^2`` (1.0 when whole).
        params_before / params_after: the layer's parameters, then its factors'.
        macs_before / macs_after: multiply-accumulates per sample, likewise.
        layers: the names of the layers that replace it, in order.
        note: why it was left whole, if it was.
    """

    layer: str
    type: str
    method: str | None
    ranks: tuple[int, ...]
    kept_energy: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: tuple[str, ...] = ()
    note: str | None = None

    @property
    def factored(self) -> bool:
        return self.method is not None


@dataclass(frozen=True)
class FactorizationSummary:
    """Per-layer factorization of a model, and the whole model's parameters and MACs
    before and after (layers without a kernel included)."""

    layers: tuple[LayerFactorization, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    criterion: str = ""

    @property
    def compression(self) -> float:
        """Parameters before over after (2.0: half the parameters)."""
        return self.params_before / self.params_after if self.params_after else float("inf")

    @property
    def mac_reduction(self) -> float:
        return self.macs_before / self.macs_after if self.macs_after else float("inf")

    def layer(self, name: str) -> LayerFactorization:
        """The row of layer `name`."""
        for row in self.layers:
            if row.layer == name:
                return row
        raise KeyError(f"No layer named {name!r} in the summary. Layers: {[r.layer for r in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "layers"},
                "compression": round(self.compression, 4), "mac_reduction": round(self.mac_reduction, 4),
                "layers": [asdict(r) for r in self.layers]}

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        for r in self.layers:
            method = r.method or "whole"
            rank = "x".join(map(str, r.ranks)) or "-"
            rows.append((r.layer, r.type, method, rank, f"{r.kept_energy:.1%}",
                         f"{r.params_before:,} -> {r.params_after:,}",
                         f"{r.macs_before:,} -> {r.macs_after:,}"))
        return rows

    _HEADER = ("layer", "type", "method", "rank", "energy", "params", "MACs")

    def _total(self) -> str:
        return (f"model: {self.params_before:,} -> {self.params_after:,} parameters "
                f"({self.compression:.2f}x), {self.macs_before:,} -> {self.macs_after:,} MACs "
                f"({self.mac_reduction:.2f}x)" + (f"; {self.criterion}" if self.criterion else ""))

    def format_table(self) -> str:
        """A plain-text table: one row per layer, then the model's totals and notes."""
        rows = [self._HEADER, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._HEADER))]
        lines = ["  ".join(cell.ljust(w) if i < 4 else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
        lines.append(self._total())
        lines += [f"  {r.layer}: {r.note}" for r in self.layers if r.note]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()

    def __rich__(self):
        """A rich Table (``rich.print(summary)``)."""
        from rich.table import Table

        table = Table(title="factorization", caption=self._total())
        for i, name in enumerate(self._HEADER):
            table.add_column(name, justify="right" if i >= 4 else "left")
        for row, layer in zip(self._rows(), self.layers):
            table.add_row(*row, style=None if layer.factored else "dim")
        return table


def summarize(model: keras.Model, candidates, kept: dict[str, float],
              chains: dict[str, tuple[str, ...]], criterion: str) -> FactorizationSummary:
    """The summary of `candidates` (chosen by `plan`) for `model`; `kept` and `chains`
    give each factored layer's kept energy and new layer names, where known."""
    from kmot.core.cost import macs

    rows = []
    for c in candidates:
        o = c.option
        if o is None:
            rows.append(LayerFactorization(c.name, c.type_name, None, (), 1.0, c.params, c.params,
                                           c.macs, c.macs, (c.name,), c.note))
        else:
            energy = kept.get(c.name)
            if energy is None:
                energy = c.factorings[o.method].kept(o)
            rows.append(LayerFactorization(c.name, c.type_name, o.method, o.ranks, energy,
                                           c.params, o.params, c.macs, o.macs,
                                           chains.get(c.name, ()), None))
    params, total_macs = int(model.count_params()), macs(model)
    return FactorizationSummary(
        tuple(rows), params, params - sum(r.params_before - r.params_after for r in rows),
        total_macs, total_macs - sum(r.macs_before - r.macs_after for r in rows), criterion)


def record(model: keras.Model, result: FactorizationSummary) -> None:
    _RECORDS[model] = result


def summary(
    model: keras.Model,
    *,
    rank: int | dict[str, int] | None = None,
    energy: float | None = None,
    compression: float | None = None,
    method: str = "auto",
    layers=None,
) -> FactorizationSummary:
    """Per layer: method, rank, kept energy, parameters and MACs before and after.

    Given a model `factorize` returned (and no options), what was done to it.
    Given any other model, a preview of what ``factorize(model, **options)`` would
    do (nothing is built), so that ranks can be chosen before fine-tuning.

    Args:
        model: a factored model, or a model to preview.
        rank, energy, compression, method, layers: as for `factorize`.

    Returns:
        A `FactorizationSummary`; print it, or ``.format_table()``, ``.to_dict()``,
        ``rich.print(...)``.

    Raises:
        DecompositionError, LayerSelectionError, UnsupportedModelError: as `factorize`.

    Example:
        >>> import keras, kmot
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="d")])
        >>> preview = kmot.decomposition.summary(model, rank=8)
        >>> preview.layer("d").params_after                 # 8 * (64 + 64) + 64
        1088
        >>> print(kmot.decomposition.summary(kmot.decomposition.factorize(model, rank=8)))  # doctest: +SKIP
        layer  type   method  rank  energy          params            MACs
        d      Dense  svd     8      38.1%  4,160 -> 1,088  4,096 -> 1,024
        model: 4,160 -> 1,088 parameters (3.82x), 4,096 -> 1,024 MACs (4.00x); rank=8, method='auto'
    """
    from kmot.decomposition.plan import check_method, check_model, plan
    from kmot.decomposition.ranks import check_criterion

    previewing = any(v is not None for v in (rank, energy, compression, layers)) or method != "auto"
    if not previewing and model in _RECORDS:
        return _RECORDS[model]
    criterion = check_criterion(rank, energy, compression)
    check_method(method)
    check_model(model)
    found = plan(model, criterion, method, layers)
    return summarize(model, found, {}, {}, describe(criterion, method))


def describe(criterion, method: str) -> str:
    value = criterion.value
    return f"{criterion.kind}={value!r}, method={method!r}"
