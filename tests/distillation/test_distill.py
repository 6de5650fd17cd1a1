import keras
import numpy as np
import pytest

from kmot import clustering, distillation, quantization, sparsity
from kmot.core import find_wrappers
from kmot.distillation.checks import outputs_probabilities
from kmot.distillation.distiller import logits_distillation
from kmot.errors import DistillationError, KmotError
from kmot.export import LiteRTModel, inspect, to_litert

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N = 512  # training images per test: enough to learn, fast to fit


def _student(classes=10, activation=None, name="student", **dense):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(classes, activation=activation, name="logits", **dense),
    ], name=name)


def _fast():
    """A fresh optimizer with a learning rate that learns digits in two short epochs."""
    return keras.optimizers.Adam(5e-3)


@pytest.fixture(scope="module")
def teacher(digits_data):
    """Conv + BatchNorm + Dense, trained 3 epochs (~0.95 test accuracy)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", name="t_conv"),
        keras.layers.BatchNormalization(name="t_bn"),
        keras.layers.ReLU(name="t_relu"),
        keras.layers.Flatten(name="t_flat"),
        keras.layers.Dense(32, activation="relu", name="t_hidden"),
        keras.layers.Dense(10, name="t_logits"),
    ], name="teacher")
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(digits_data[0], digits_data[1], batch_size=32, epochs=3, verbose=0)
    return model


def _pretrained_student(x, y, *, seed):
    """A student trained 2 epochs on labels alone: a start for wrapping and distilling."""
    keras.utils.set_random_seed(seed)
    student = _student()
    student.compile(_fast(), LOSS)
    student.fit(x[:N], y[:N], batch_size=64, epochs=2, verbose=0)
    return student


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def _litert_accuracy(content, x, y):
    return float(np.mean(LiteRTModel(content).predict(x, batch_size=64).argmax(-1) == y))


# ---------------------------------------------------------------- training


def test_distilled_student_learns_in_place(teacher, digits_data):
    x, y, x_test, y_test = digits_data
    keras.utils.set_random_seed(1)
    student = _student()
    untrained = _accuracy(student, x_test, y_test)
    student.compile(_fast(), LOSS)  # distill trains with (a copy of) this optimizer
    trained = distillation.distill(student, teacher, x[:N], y[:N], epochs=2)
    assert trained is student
    assert _accuracy(student, x_test, y_test) >= max(0.7, untrained + 0.5)


def test_teacher_is_untouched(teacher, digits_data):
    x, y, _, _ = digits_data
    before = [w.copy() for w in teacher.get_weights()]  # includes BatchNorm statistics
    teacher.get_layer("t_conv").trainable = False  # a user's own freeze must survive
    try:
        distillation.distill(_student(), teacher, x[:N], y[:N], epochs=1)
        assert teacher.trainable and teacher.get_layer("t_hidden").trainable
        assert not teacher.get_layer("t_conv").trainable
    finally:
        teacher.get_layer("t_conv").trainable = True
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_label_free_distillation_from_a_dataset(teacher, digits_data):
    import tensorflow as tf

    x, _, x_test, y_test = digits_data
    keras.utils.set_random_seed(2)
    data = tf.data.Dataset.from_tensor_slices(x).batch(64)  # inputs only, no labels
    student = distillation.distill(_student(), teacher, data, epochs=2, alpha=0.0,
                                   optimizer=_fast())
    assert _accuracy(student, x_test, y_test) >= 0.7


def test_the_compiled_optimizer_is_used_by_default(teacher, digits_data):
    x, y, _, _ = digits_data
    student = _student()
    student.compile(keras.optimizers.SGD(learning_rate=0.0), LOSS)
    before = [w.copy() for w in student.get_weights()]
    distillation.distill(student, teacher, x[:128], y[:128], epochs=1)
    for a, b in zip(before, student.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_student_regularization_is_part_of_the_loss(teacher, digits_data):
    x, y, _, _ = digits_data
    logs = {}

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, epoch_logs=None):
            logs.update(epoch_logs)

    student = _student(kernel_regularizer=keras.regularizers.L2(1.0))
    distillation.distill(student, teacher, x[:128], y[:128], epochs=1, callbacks=[Keep()],
                         metrics=["accuracy"])
    # `total_loss` is Keras's distillation objective; `loss` is what was minimized.
    assert logs["loss"] > logs["total_loss"] + 0.1
    assert "accuracy" in logs


# ------------------------------------------------------------ the losses


def test_distillation_loss_is_tempered_kl():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 4, 10)).astype("float32") * 3
    temperature = 4.0

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / temperature), softmax(s / temperature)
    expected = np.mean(np.sum(p * np.log(p / q), -1)) * temperature ** 2
    got = float(logits_distillation(temperature).compute_loss(t, s))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # A teacher's probabilities give the same loss as its logits.
    from_probs = float(logits_distillation(temperature, teacher_probabilities=True)
                       .compute_loss(softmax(t), s))
    np.testing.assert_allclose(from_probs, expected, rtol=1e-3)


def test_teacher_with_softmax_output_is_distilled(teacher, digits_data):
    x, y, x_test, y_test = digits_data
    probabilities = keras.Sequential([teacher, keras.layers.Softmax()], name="teacher_softmax")
    assert outputs_probabilities(probabilities.predict(x[:32], verbose=0))
    keras.utils.set_random_seed(3)
    student = distillation.distill(_student(), probabilities, x[:N], y[:N], epochs=2,
                                   optimizer=_fast())
    assert _accuracy(student, x_test, y_test) >= 0.7


# ------------------------------------------------------ wrapped students


def test_pruned_student_follows_its_schedule_and_strips(teacher, digits_data, tmp_path):
    x, y, x_test, y_test = digits_data
    keras.utils.set_random_seed(4)
    steps = 2 * N // 64
    schedule = sparsity.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=steps // 2,
                                        frequency=2)
    pruned = sparsity.prune_low_magnitude(_student(), pruning_schedule=schedule)
    distillation.distill(pruned, teacher, x[:N], y[:N], epochs=2, optimizer=_fast())
    # The step advanced once per training batch, inside the Distiller's step.
    steps_seen = [int(t.step.numpy()) for w in find_wrappers(pruned)
                  for chain in w.transforms.values() for t in chain]
    assert steps_seen and all(s == steps - 1 for s in steps_seen)
    assert abs(sparsity.summary(pruned).overall - 0.75) < 0.01
    final = sparsity.strip_pruning(pruned)
    assert not find_wrappers(final)
    assert abs(sparsity.summary(final).overall - 0.75) < 0.01
    content = to_litert(final)
    assert _litert_accuracy(content, x_test, y_test) == pytest.approx(
        _accuracy(final, x_test, y_test), abs=0.01)
    pruned.save(tmp_path / "pruned.keras")  # the wrapped student still saves


def test_clustered_student_strips_and_exports(teacher, digits_data):
    x, y, x_test, y_test = digits_data
    start = _pretrained_student(x, y, seed=5)
    clustered = clustering.cluster_weights(start, number_of_clusters=8)
    distillation.distill(clustered, teacher, x[:N], y[:N], epochs=1, optimizer=_fast())
    final = clustering.strip_clustering(clustered)
    assert not find_wrappers(final)
    assert all(w.unique_values <= 8 for w in clustering.summary(final).weights)
    assert _litert_accuracy(to_litert(final), x_test, y_test) >= 0.5


def test_qat_student_exports_fully_int8(teacher, digits_data):
    x, y, x_test, y_test = digits_data
    start = _pretrained_student(x, y, seed=6)
    qat = quantization.quantize_model(start)
    quantizers = [layer for layer in qat.layers
                  if isinstance(layer, quantization.ActivationQuantizer)]
    assert quantizers
    distillation.distill(qat, teacher, x[:N], y[:N], epochs=2, optimizer=_fast())
    # Activation ranges were learned in the Distiller's training step.
    assert all(float(q.initialized.numpy()) == 1.0 for q in quantizers)
    content = to_litert(qat)  # int8 with no representative data
    assert inspect(content).float_ops_between_io() == []
    accuracy = _litert_accuracy(content, x_test, y_test)
    assert accuracy >= 0.7
    assert accuracy == pytest.approx(_accuracy(qat, x_test, y_test), abs=0.02)


# ---------------------------------------------------------------- errors


def test_errors_are_kmot_and_value_errors():
    assert issubclass(DistillationError, KmotError)
    assert issubclass(DistillationError, ValueError)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), True, "4"])
def test_bad_temperature(teacher, digits_data, temperature):
    with pytest.raises(DistillationError, match=r"`temperature` must be a finite number > 0.*"
                                                 rf"Received: temperature={temperature!r}"):
        distillation.distill(_student(), teacher, digits_data[0], digits_data[1], epochs=1,
                             temperature=temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, None, float("nan")])
def test_bad_alpha(teacher, digits_data, alpha):
    with pytest.raises(DistillationError, match=r"`alpha` weights the hard-label loss .* "
                                                rf"in \[0, 1\].*Received: alpha={alpha!r}"):
        distillation.distill(_student(), teacher, digits_data[0], digits_data[1], epochs=1,
                             alpha=alpha)


@pytest.mark.parametrize("name, value", [("epochs", 0), ("batch_size", 0), ("epochs", 2.0)])
def test_bad_epochs_or_batch_size(teacher, digits_data, name, value):
    options = {"epochs": 1, name: value}
    with pytest.raises(DistillationError, match=rf"`{name}` must be an int >= 1. "
                                                rf"Received: {name}={value!r}"):
        distillation.distill(_student(), teacher, digits_data[0], digits_data[1], **options)


def test_labels_missing(teacher, digits_data):
    with pytest.raises(DistillationError, match=r"no labels were given. Pass `y`, or alpha=0.0"
                                                r".*Received: y=None, alpha=0.5"):
        distillation.distill(_student(), teacher, digits_data[0], epochs=1)


def test_output_shapes_differ(teacher, digits_data):
    with pytest.raises(DistillationError, match=r"output shape must equal the teacher's.*"
                                                r"Received: teacher output shape \(None, 10\), "
                                                r"student output shape \(None, 5\).*Dense\(10\)"):
        distillation.distill(_student(classes=5), teacher, digits_data[0], digits_data[1],
                             epochs=1)


def test_output_shapes_differ_without_array_inputs(teacher):
    def batches():  # a generator: nothing is peeked, the symbolic shapes are compared
        yield np.zeros((4, 8, 8, 1), "float32"), np.zeros((4,), "int64")

    with pytest.raises(DistillationError, match=r"Received: teacher output shape \(None, 10\), "
                                                r"student output shape \(None, 3\)"):
        distillation.distill(_student(classes=3), teacher, batches(), epochs=1)


def test_student_outputs_probabilities(teacher, digits_data):
    with pytest.raises(DistillationError, match=r"student must output logits.*Received: student "
                                                r"'student' outputs probabilities.*final softmax"):
        distillation.distill(_student(activation="softmax"), teacher, digits_data[0],
                             digits_data[1], epochs=1)


def test_student_and_teacher_must_be_separate(teacher, digits_data):
    with pytest.raises(DistillationError, match=r"must be separate models.*"
                                                r"Received: the same model object.*clone_model"):
        distillation.distill(teacher, teacher, digits_data[0], digits_data[1], epochs=1)
    shared = keras.Sequential([teacher.get_layer("t_conv"), keras.layers.Flatten(),
                               keras.layers.Dense(10)])
    with pytest.raises(DistillationError, match=r"Received: 2 shared variable\(s\), e.g. "
                                                r"'teacher/t_conv/kernel'"):
        distillation.distill(shared, teacher, digits_data[0], digits_data[1], epochs=1)


def test_inputs_differ(teacher, digits_data):
    other = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(DistillationError, match=r"must take the teacher's inputs.*Received: "
                                                r"teacher inputs \[\(None, 8, 8, 1\)\], "
                                                r"student inputs \[\(None, 64\)\]"):
        distillation.distill(other, teacher, digits_data[0], digits_data[1], epochs=1)


def test_inputs_that_do_not_run(teacher):
    x = np.zeros((8, 40, 1), "float32")  # MNIST-1D signals for a digits model
    with pytest.raises(DistillationError, match=r"The teacher must run on the training inputs. "
                                                r"Received: inputs of shape \(8, 40, 1\) fail"):
        distillation.distill(_student(), teacher, x, np.zeros(8, "int64"), epochs=1)


def test_not_models(teacher, digits_data):
    with pytest.raises(DistillationError, match=r"Expected keras.Model instances.*Received: "
                                                r"student=Dense, teacher=Sequential"):
        distillation.distill(keras.layers.Dense(10), teacher, digits_data[0], digits_data[1],
                             epochs=1)


def test_multi_output_and_single_class_models(teacher, digits_data):
    inp = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inp)
    two = keras.Model(inp, [keras.layers.Dense(10)(flat), keras.layers.Dense(10)(flat)])
    with pytest.raises(DistillationError, match=r"single-output classifiers.*Received: the "
                                                r"student '.*' has 2 outputs"):
        distillation.distill(two, teacher, digits_data[0], digits_data[1], epochs=1)
    one = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(DistillationError, match=r"at least 2 classes.*Received: teacher output "
                                                r"shape \(None, 1\).*Dense\(2\)"):
        distillation.distill(_student(classes=1), one, digits_data[0], digits_data[1], epochs=1)


def test_bad_optimizer(teacher, digits_data):
    with pytest.raises(DistillationError, match=r"`optimizer` must be None .*Received: "
                                                r"optimizer=0.001"):
        distillation.distill(_student(), teacher, digits_data[0], digits_data[1], epochs=1,
                             optimizer=1e-3)


def test_keras_distiller_rejections_are_wrapped(teacher, digits_data):
    # Same shapes, different input dtype: only the Distiller's own checks see it.
    student = keras.Sequential([keras.Input((8, 8, 1), dtype="float16"),
                                keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(DistillationError, match=r"Distiller expects a teacher and a student with "
                                                r"the same .* dtypes. Received: .*float16"):
        distillation.distill(student, teacher, digits_data[0], digits_data[1], epochs=1)
