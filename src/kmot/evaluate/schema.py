"""The versioned data model of an evaluation report, and its JSON schema.

`report.json` is a dump of these pydantic models; the JSON schema published for
consumers (CI scripts, dashboards) is generated from the same models, so the two
cannot drift. `SCHEMA_VERSION` is "MAJOR.MINOR": a minor bump only adds optional
fields, a major bump means older readers must refuse the file.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "CandidateResult",
    "ClassDelta",
    "ErrorProfile",
    "Fidelity",
    "GateCheck",
    "GateRecord",
    "LatencyStats",
    "MemoryStats",
    "MetricInfo",
    "OpCoverage",
    "OutputDelta",
    "Provenance",
    "Registration",
    "RemoteMachine",
    "Settings",
    "SizeStats",
    "Step",
]

SCHEMA_VERSION = "1.2"


def error_location(error: dict[str, Any]) -> str:
    """Where one of pydantic's errors points, dotted (``latency.p50_ms``), for messages."""
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a hand-edited report must not pass silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricInfo(_Model):
    """A task metric's name and which direction is better."""

    name: str
    higher_is_better: bool = True


class RemoteMachine(_Model):
    """The machine some figures were measured on, when not this one (``--remote``)."""

    target: str = Field(description="ssh://[user@]host[:port]")
    environment: dict[str, str] = Field(
        description="its Python, platform, machine, CPU and runtime versions")
    measured: list[str] = Field(
        description='the figures taken there ("latency", "memory"); metrics, fidelity, '
                    "the error profile, size and ops come from this machine")


class Settings(_Model):
    """How the candidates were measured."""

    runs: int = Field(description="timed invocations per candidate")
    warmup: int = Field(description="untimed invocations before timing")
    threads: int = Field(description="interpreter threads (LiteRT candidates)")
    batch_size: int = Field(description="samples per timed invocation")
    num_samples: int = Field(description="validation samples every candidate ran on")
    memory: bool = Field(description="whether peak memory was measured")
    remote: RemoteMachine | None = Field(
        None, description="where latency and memory were measured, if not this machine")


class LatencyStats(_Model):
    """Latency of one invocation, in milliseconds, over `runs` timed runs."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    samples_ms: list[float] = Field(description="every timed run, in order")


class MemoryStats(_Model):
    """Peak resident memory (max RSS) of isolated processes, in MB (10^6 bytes).

    `peak_mb` is a process that loads and runs the model; `idle_mb` one that
    imports the same runtime and nothing else; `net_mb` their difference.
    """

    peak_mb: float
    idle_mb: float
    net_mb: float


class SizeStats(_Model):
    """The artifact's size on disk, raw and gzip -9 compressed."""

    bytes: int
    gzip_bytes: int


class OpCoverage(_Model):
    """Ops of a LiteRT (or ONNX) file by the type they compute in (see kmot.export.inspect).

    `fallback` counts float compute ops left inside an integer-quantized graph.
    """

    total: int
    int8: int
    int16: int
    float: int
    quantize: int = Field(description="QUANTIZE and DEQUANTIZE ops")
    other: int = Field(description="ops on int32/bool tensors only (shape math)")
    fallback: int
    fallback_ops: list[str] = Field(default_factory=list)
    is_quantized: bool


class Fidelity(_Model):
    """How closely a candidate's first output follows the baseline's.

    Both outputs are read as logits (softmax applied) unless the baseline's rows
    are already probabilities (in [0, 1], summing to about 1); then both are read
    as probabilities. `kl_divergence` is KL(baseline || candidate) in nats, the
    mean over samples. `argmax_agreement` and `kl_divergence` are None for
    outputs whose last axis has one unit (no classes to compare).
    """

    argmax_agreement: float | None
    output_rmse: float
    kl_divergence: float | None


class ClassDelta(_Model):
    """Accuracy on one class's samples, baseline and candidate."""

    label: int
    support: int = Field(description="validation samples of this class")
    baseline_accuracy: float
    accuracy: float
    delta: float = Field(description="accuracy minus baseline_accuracy")


class OutputDelta(_Model):
    """Mean absolute error of one regression output column, baseline and candidate."""

    index: int
    baseline_mae: float
    mae: float
    delta: float


class ErrorProfile(_Model):
    """Where a candidate's error differs from the baseline's (see kmot.evaluate.profile).

    Classification: per-class accuracy (the support-weighted deltas add up to
    `accuracy_delta`), the confusion-matrix difference (candidate minus baseline,
    rows: true class), the indices of the samples whose predicted class changed,
    of those the candidate fixed (baseline wrong, candidate right) and broke, a
    paired bootstrap 95% interval on the accuracy delta, and McNemar's exact
    p-value. Regression: per-output mean absolute error.
    """

    kind: Literal["classification", "regression"]
    per_class: list[ClassDelta] = Field(default_factory=list)
    confusion_delta: list[list[int]] = Field(default_factory=list)
    changed: list[int] = Field(default_factory=list, description="argmax differs")
    fixed: list[int] = Field(default_factory=list)
    broken: list[int] = Field(default_factory=list)
    accuracy_delta: float | None = None
    delta_ci95: tuple[float, float] | None = Field(
        None, description="paired bootstrap percentile interval (2000 resamples, seed 0)")
    mcnemar_p: float | None = None
    per_output: list[OutputDelta] = Field(default_factory=list)


class Step(_Model):
    """One step of how a candidate was made: a technique (or fine-tuning) and its options."""

    technique: str = Field(description='e.g. "prune_low_magnitude", "fine-tune", "distill"')
    options: dict[str, Any] = Field(default_factory=dict, description="JSON values")


class Provenance(_Model):
    """How a candidate was made, so a reviewer can rebuild or question it."""

    steps: list[Step] = Field(default_factory=list, description="in the order applied")
    export: str | None = Field(None, description="the LiteRT conversion mode (to_litert's "
                                                 "quantize: float32, int8, ...)")
    recipe: str | None = Field(None, description="the recipe's name, if a recipe made it")
    recipe_sha256: str | None = Field(None, description="SHA-256 of the recipe as run")
    source: str | None = Field(None, description="the model it was made from")
    source_sha256: str | None = Field(
        None, description="SHA-256 of the source model (its config and weights, or its file)")


class CandidateResult(_Model):
    """Everything measured for one candidate."""

    name: str
    kind: Literal["tflite", "keras", "saved_model", "onnx"]
    source: str | None = Field(description="the file it was loaded from, if any")
    metrics: dict[str, float] = Field(default_factory=dict)
    metric_deltas: dict[str, float] = Field(
        default_factory=dict, description="metric minus the baseline's")
    fidelity: Fidelity | None = Field(description="None for the baseline itself")
    latency: LatencyStats
    latency_ratio: float = Field(description="p50 divided by the baseline's p50")
    memory: MemoryStats | None
    size: SizeStats
    ops: OpCoverage | None = Field(description="LiteRT and ONNX files; None for Keras "
                                               "models and SavedModels")
    input_dtypes: list[str]
    output_dtypes: list[str]
    notes: list[str] = Field(default_factory=list)
    provenance: Provenance | None = Field(None, description="how it was made, when known")
    error_profile: ErrorProfile | None = Field(
        None, description="vs the baseline, when labels were given (None for the baseline)")


class GateCheck(_Model):
    """One budget checked on one candidate (see kmot.evaluate.gate)."""

    budget: str
    candidate: str
    value: float | None = Field(description="None when the report lacks the measurement")
    limit: float
    passed: bool
    detail: str
    unit: str = ""


class GateRecord(_Model):
    """The verdict of a gate run on this report."""

    passed: bool
    checks: list[GateCheck]


class Registration(_Model):
    """A candidate pushed to a model registry."""

    candidate: str
    name: str = Field(description="the registered model's name")
    version: int
    sha256: str = Field(description="the stored artifact's SHA-256")
    stage: str | None = Field(None, description='e.g. "production" once promoted')
    registry: str = Field(description="the registry's location")


def schema_extra(schema: dict[str, Any]) -> None:
    """Stamps the generated schema with its identity and version."""
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"urn:kmot:evaluate:report:{SCHEMA_VERSION}"
    schema["title"] = f"kmot evaluation report, schema {SCHEMA_VERSION}"
