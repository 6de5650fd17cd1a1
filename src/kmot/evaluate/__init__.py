"""Evaluation harness: compare candidates on the same data and hardware, report, gate.

`compare` measures task metrics, fidelity to a baseline, latency percentiles,
peak memory, size and op coverage; the `Report` saves as JSON (versioned
schema), Markdown and self-contained HTML; `gate` checks it against budgets.
TensorFlow and the LiteRT runtime load only when candidates are run.

Example:
    >>> report = kmot.evaluate.compare({"base": "base.tflite", "int8": "int8.tflite"},
    ...                                data=(x_val, y_val), baseline="base")  # doctest: +SKIP
    >>> report.save("report/")                                               # doctest: +SKIP
    >>> kmot.evaluate.gate(report, {"max_accuracy_drop": 0.01}).passed         # doctest: +SKIP
"""

from kmot.evaluate.budgets import Budgets, load_budgets
from kmot.evaluate.compare import compare
from kmot.evaluate.gate import Check, GateResult, gate
from kmot.evaluate.memory import measure_peak_memory
from kmot.evaluate.report import Report, report_schema
from kmot.evaluate.schema import SCHEMA_VERSION, CandidateResult, Provenance, Step

__all__ = [
    "SCHEMA_VERSION",
    "Budgets",
    "CandidateResult",
    "Check",
    "GateResult",
    "Provenance",
    "Report",
    "Step",
    "compare",
    "gate",
    "load_budgets",
    "measure_peak_memory",
    "report_schema",
]
