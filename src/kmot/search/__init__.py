"""Budget-driven search: the least compression that meets every budget.

Candidates are tried from least to most invasive (post-training quantization,
selective int8, QAT, then Optuna trials over the training-based techniques) and
each is measured by `kmot.evaluate.compare` and judged by `kmot.evaluate.gate`
against the gate's own budgets. Optuna loads only when the search stage runs.

Example:
    >>> result = kmot.search.search("base.keras", "budgets.yaml", data="train.npz",
    ...                             val="val.npz", out="search/")  # doctest: +SKIP
    >>> result.chosen                                              # doctest: +SKIP
"""

from kmot.search.results import SearchResult
from kmot.search.run import search
from kmot.search.space import STAGES, TECHNIQUES, SearchError, SearchSpace, load_space

__all__ = ["STAGES", "TECHNIQUES", "SearchError", "SearchResult", "SearchSpace", "load_space",
           "search"]
