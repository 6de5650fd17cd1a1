"""Task metrics and fidelity, checked against values worked out by hand."""

import numpy as np
import pytest

from kmot.errors import EvaluationError
from kmot.evaluate.metrics import fidelity, resolve_metrics

LOGITS = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 1.5, 0.0]])
LABELS = np.array([0, 2, 1, 1])  # top-1 right: rows 0; top-2 right: rows 0, 1, 3


def metric(name):
    return resolve_metrics([name])[0]


@pytest.mark.parametrize("name", ["accuracy", "top1", "TOP_1", "top_k:1"])
def test_accuracy_and_its_aliases(name):
    m = metric(name)
    assert m.name == "accuracy" and m.higher_is_better
    assert m(LABELS, LOGITS) == 0.25


@pytest.mark.parametrize("name", ["top2", "top_2", "top-2", "top_k:2"])
def test_top_k(name):
    m = metric(name)
    assert m.name == "top2"
    assert m(LABELS, LOGITS) == 0.75


def test_one_hot_labels_and_column_labels():
    assert metric("accuracy")(np.eye(3)[LABELS], LOGITS) == 0.25
    assert metric("accuracy")(LABELS[:, None], LOGITS) == 0.25


def test_binary_scores():
    probs, logits = np.array([[0.9], [0.2], [0.6]]), np.array([[2.0], [-1.0], [-0.5]])
    assert metric("accuracy")(np.array([1, 0, 0]), probs) == pytest.approx(2 / 3)
    assert metric("accuracy")(np.array([1, 0, 0]), logits) == 1.0


def test_regression_metrics():
    y, pred = np.array([1.0, 2.0, 4.0]), np.array([[1.0], [3.0], [2.0]])
    assert metric("mae")(y, pred) == pytest.approx(1.0)
    assert metric("rmse")(y, pred) == pytest.approx(np.sqrt(5 / 3))
    assert not metric("mae").higher_is_better


def test_user_callables_and_dicts():
    def mean_confidence(y_true, y_pred):
        return float(y_pred.max(-1).mean())

    def worst_error(y_true, y_pred):
        return 1.0

    worst_error.higher_is_better = False
    m = resolve_metrics([mean_confidence, worst_error])
    assert [x.name for x in m] == ["mean_confidence", "worst_error"]
    assert m[0](LABELS, LOGITS) == pytest.approx(2.25) and not m[1].higher_is_better
    named = resolve_metrics({"conf": mean_confidence, "acc": "top1"})
    assert [x.name for x in named] == ["conf", "acc"]


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(EvaluationError, match=r"Unknown metric. Expected 'accuracy' \(alias "
                       r"'top1'\), 'topK'.*'mae', 'rmse', or a callable.*Received: 'f1'"):
        resolve_metrics(["f1"])
    with pytest.raises(EvaluationError, match=r"Received: 'top0'"):
        resolve_metrics(["top0"])
    with pytest.raises(EvaluationError, match=r"Expected each metric to be .*Received: 3"):
        resolve_metrics([3])


def test_duplicate_metric_names():
    with pytest.raises(EvaluationError, match=r"Received: \['accuracy'\] more than once"):
        resolve_metrics(["top1", "accuracy"])


def test_failing_user_metric_is_named():
    def broken(y_true, y_pred):
        raise ValueError("boom")

    with pytest.raises(EvaluationError, match=r"Metric 'broken' failed on labels of shape "
                       r"\(4,\) and outputs of shape \(4, 3\).*ValueError: boom"):
        resolve_metrics([broken])[0](LABELS, LOGITS)
    with pytest.raises(EvaluationError, match=r"must return a finite number. Received: nan"):
        resolve_metrics({"nan": lambda y, p: float("nan")})[0](LABELS, LOGITS)


def test_top_k_needs_k_classes():
    with pytest.raises(EvaluationError, match=r"top5 needs at least 5 classes. Received: outputs "
                       r"of shape \(4, 3\)"):
        metric("top5")(LABELS, LOGITS)


def test_label_shape_mismatch():
    with pytest.raises(EvaluationError, match=r"Expected labels of shape \(4,\) \(class ids\) or "
                       r"\(4, 3\) \(one-hot\).*Received: y of shape \(4, 2\)"):
        metric("accuracy")(np.zeros((4, 2)), LOGITS)
    with pytest.raises(EvaluationError, match=r"one target per output value"):
        metric("mae")(np.zeros(5), LOGITS)


def test_fidelity_of_identical_outputs():
    f = fidelity(LOGITS, LOGITS.copy(), name="same")
    assert f.argmax_agreement == 1.0 and f.output_rmse == 0.0 and f.kl_divergence == 0.0


def test_fidelity_on_logits():
    other = LOGITS.copy()
    other[0] = [0.0, 3.0, 1.0]  # one row's argmax moves
    f = fidelity(LOGITS, other, name="c")
    assert f.argmax_agreement == 0.75
    assert f.output_rmse == pytest.approx(np.sqrt(np.mean((LOGITS - other) ** 2)))
    p = np.exp(LOGITS[0]) / np.exp(LOGITS[0]).sum()
    q = np.exp(other[0]) / np.exp(other[0]).sum()
    assert f.kl_divergence == pytest.approx(np.sum(p * np.log(p / q)) / 4)


def test_fidelity_reads_probabilities_as_probabilities():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    q = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    expected = np.mean(np.sum(p * np.log(p / q), axis=-1))
    assert fidelity(p, q, name="c").kl_divergence == pytest.approx(expected)
    # A quantized softmax sums to 1 only roughly: still read as probabilities.
    rough = np.round(q * 256) / 256 + 0.002
    assert fidelity(p, rough, name="c").kl_divergence == pytest.approx(expected, abs=5e-3)


def test_fidelity_of_a_single_unit_output():
    f = fidelity(np.zeros((3, 1)), np.ones((3, 1)), name="c")
    assert f.argmax_agreement is None and f.kl_divergence is None and f.output_rmse == 1.0


def test_fidelity_needs_the_same_shape():
    with pytest.raises(EvaluationError, match=r"Candidate 'c' must have the baseline's output "
                       r"shape.*Expected: \(4, 3\). Received: \(4, 2\)"):
        fidelity(LOGITS, LOGITS[:, :2], name="c")
