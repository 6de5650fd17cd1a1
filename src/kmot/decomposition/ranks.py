"""Choosing each layer's factorization: by rank, by kept energy, or by a
parameter budget for the whole model.

A layer is factored only where its factors have fewer parameters *and* fewer
MACs than it has; otherwise it stays whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from kmot.decomposition.options import Factoring, Option
from kmot.errors import DecompositionError

__all__ = ["METHODS", "Candidate", "Criterion", "check_criterion", "choose"]

#: ``"auto"``: per conv layer, whichever of Tucker-2 and spatial SVD costs fewer MACs;
#: ``"svd"``: Dense and EinsumDense only; ``"tucker"`` / ``"spatial"``: that method
#: for convolutions (Dense and EinsumDense always use SVD).
METHODS = ("auto", "svd", "tucker", "spatial")
DEFAULT_ENERGY = 0.9


@dataclass
class Candidate:
    """A selected layer with a kernel: its cost whole and the ways it can be factored."""

    name: str
    type_name: str
    params: int
    macs: int
    factorings: dict[str, Factoring] = field(default_factory=dict)
    note: str | None = None  # why it has no factoring (or why none was chosen)
    option: Option | None = None  # the choice

    def saves(self, option: Option) -> bool:
        return option.params < self.params and option.macs < self.macs


@dataclass(frozen=True)
class Criterion:
    kind: str  # "rank", "energy" or "compression"
    value: object


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_rank(value, where: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise DecompositionError(
            f"Expected rank to be an int >= 1 (or a dict of layer name -> int >= 1). "
            f"Received: {where}{value!r}")


def check_criterion(rank, energy, compression) -> Criterion:
    """The one rank criterion given (default: energy 0.9), validated."""
    given = {k: v for k, v in (("rank", rank), ("energy", energy), ("compression", compression))
             if v is not None}
    if len(given) > 1:
        raise DecompositionError(
            "Expected at most one of rank=, energy= and compression= (each decides every "
            "layer's rank on its own). Received: "
            + ", ".join(f"{k}={v!r}" for k, v in given.items()))
    if not given:
        return Criterion("energy", DEFAULT_ENERGY)
    (kind, value), = given.items()
    if kind == "rank":
        if isinstance(value, Mapping):
            if not value:
                raise DecompositionError(
                    "Expected rank= to name at least one layer. Received: rank={}")
            for name, r in value.items():
                _check_rank(r, f"rank[{name!r}]=")
            return Criterion("rank", dict(value))
        _check_rank(value, "rank=")
        return Criterion("rank", int(value))
    if kind == "energy" and not (_is_number(value) and 0 < value <= 1):
        raise DecompositionError(
            "Expected energy in (0, 1]: the fraction of each kernel's squared singular "
            f"values to keep (0.9 keeps 90%). Received: energy={value!r}")
    if kind == "compression" and not (_is_number(value) and value >= 1):
        raise DecompositionError(
            "Expected compression >= 1: the model's parameter count divided by the "
            f"factored model's (2.0 halves it). Received: compression={value!r}")
    return Criterion(kind, float(value))


def _cheapest(options: list[Option]) -> Option:
    return min(options, key=lambda o: (o.macs, o.params))


def _pick(candidate: Candidate, options: list[Option], what: str) -> None:
    best = _cheapest(options) if options else None
    if best is not None and candidate.saves(best):
        candidate.option = best
    elif best is not None:
        candidate.note = (f"left whole: {best.method} at rank {'x'.join(map(str, best.ranks))} "
                          f"({what}) would not save parameters and MACs")


def choose(candidates: list[Candidate], criterion: Criterion, *, total_params: int) -> None:
    """Sets each candidate's `option` (None: left whole, with a `note`)."""
    if criterion.kind == "rank":
        ranks = criterion.value
        allowed = {c.name: max(f.max_rank for f in c.factorings.values())
                   for c in candidates if c.factorings}
        if not isinstance(ranks, dict) and allowed and ranks > max(allowed.values()):
            # one rank for every layer: a layer too small for it is left whole, but a rank
            # no layer allows would leave the whole model as it is
            raise DecompositionError(
                f"rank={ranks} is larger than every factorable layer allows (up to "
                f"{', '.join(f'{n}: {r}' for n, r in allowed.items())}). Expected a rank "
                f"<= {max(allowed.values())}, or rank= as a dict by layer name. Received: "
                f"rank={ranks}")
        for c in candidates:
            if not c.factorings:
                continue
            if isinstance(ranks, dict):
                if c.name not in ranks:
                    c.note = "left whole: not in rank="
                    continue
                r = ranks[c.name]
                largest = max(f.max_rank for f in c.factorings.values())
                if r > largest:
                    raise DecompositionError(
                        f"Layer '{c.name}' ({c.type_name}) allows ranks up to {largest} "
                        f"({', '.join(f'{m}: {f.max_rank}' for m, f in c.factorings.items())}). "
                        f"Expected a smaller rank for it. Received: rank[{c.name!r}]={r}")
                _pick(c, [f.at_rank(r) for f in c.factorings.values() if r <= f.max_rank],
                      f"rank={r}")
            else:
                _pick(c, [f.at_rank(ranks) for f in c.factorings.values()], f"rank={ranks}")
    elif criterion.kind == "energy":
        for c in candidates:
            if c.factorings:
                _pick(c, [f.for_energy(criterion.value) for f in c.factorings.values()],
                      f"energy={criterion.value}")
    else:
        _by_budget(candidates, criterion.value, total_params)


def _frontier(candidate: Candidate) -> list[Option | None]:
    """The options that keep more energy than every cheaper one, cheapest first,
    ending with None (whole: all its energy, all its parameters)."""
    options = [o for f in candidate.factorings.values() for o in f.options() if candidate.saves(o)]
    options.sort(key=lambda o: (o.params, -o.energy, o.macs))
    frontier, best = [], -1.0
    for o in options:
        if o.energy > best:
            frontier.append(o)
            best = o.energy
    # Whole comes last, unless an option already keeps everything (a rank-deficient kernel).
    return frontier if best >= 1.0 - 1e-12 else [*frontier, None]


def _by_budget(candidates: list[Candidate], compression: float, total_params: int) -> None:
    """Greedy: start every layer at its cheapest option, then repeatedly take the step
    (to any costlier option of one layer) that keeps the most energy per parameter
    added, while the model stays within ``total_params / compression``."""
    budget = total_params / compression
    by_name = {c.name: c for c in candidates if c.factorings}
    frontiers = {name: _frontier(c) for name, c in by_name.items()}
    costs = {name: np.array([by_name[name].params if o is None else o.params for o in f])
             for name, f in frontiers.items()}
    energies = {name: np.array([1.0 if o is None else o.energy for o in f])
                for name, f in frontiers.items()}
    at = {name: 0 for name in frontiers}
    fixed = total_params - sum(c.params for c in by_name.values())
    used = fixed + sum(float(costs[n][0]) for n in frontiers)
    if used > budget:
        raise DecompositionError(
            f"compression={compression:g} needs the model at {budget:,.0f} parameters, but "
            f"factoring every selected layer at rank 1 leaves {used:,.0f} (at most "
            f"{total_params / used:.2f}x). Expected a smaller compression, or more layers "
            f"selected with layers=. Received: compression={compression:g}")
    while True:
        best = None
        for name in frontiers:
            i = at[name]
            extra = costs[name][i + 1:] - costs[name][i]
            gain = energies[name][i + 1:] - energies[name][i]
            fits = extra <= budget - used
            if not fits.any():
                continue
            ratio = np.where(fits, gain / np.maximum(extra, 1), -np.inf)
            j = int(np.argmax(ratio))
            if best is None or ratio[j] > best[0]:
                best = (ratio[j], name, i + 1 + j)
        if best is None:
            break
        _, name, j = best
        used += float(costs[name][j] - costs[name][at[name]])
        at[name] = j
    for c in candidates:
        if c.name in frontiers:
            c.option = frontiers[c.name][at[c.name]]
            if c.option is None:
                c.note = (f"left whole: within compression={compression:g}, whole keeps the "
                          "most energy for its parameters")
