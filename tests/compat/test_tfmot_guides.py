"""tfmot's public guides, run with ``import kmot.compat.tfmot as tfmot``.

Each test is the code of one guide (pruning_with_keras, the pruning comprehensive
guide, QAT training_example and comprehensive guide, clustering_example, and the
collaborative-optimization guides PQAT / CQAT / PCQAT) with tfmot's import
replaced, and MNIST replaced by the bundled digits (8x8x1: nothing downloads), the
epochs shortened. The conversion is the guides' own ``tf.lite.TFLiteConverter``.
After each, what the guide reports is checked on the result: accuracy, sparsity,
distinct values, a fully int8 file.
"""

import os
import tempfile
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmot.compat.tfmot as tfmot
from kmot.errors import KmotError
from kmot.export import inspect


@pytest.fixture(scope="module")
def mnist(digits_data):
    x, y, xt, yt = digits_data
    return (x, y), (xt, yt)


def baseline_model():
    # The guides' model, for 8x8 digits: 32 "same" filters keep about as many weights
    # in the Dense layer as the guides' 12 filters over 28x28 MNIST.
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8, 1)),
        keras.layers.Conv2D(filters=32, kernel_size=(3, 3), activation="relu", padding="same"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


@pytest.fixture(scope="module")
def trained(mnist):
    (train_images, train_labels), (test_images, test_labels) = mnist
    keras.utils.set_random_seed(0)
    model = baseline_model()
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=10, validation_split=0.1, verbose=0)
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    return model, baseline_model_accuracy


def tflite_accuracy(content, test_images, test_labels):
    """The guides' evaluate_model, on the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    hits = 0
    for image, label in zip(test_images, test_labels):
        x = image[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            x = np.round(x / scale + zero).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        hits += int(np.argmax(interpreter.get_tensor(out["index"])) == label)
    return hits / len(test_labels)


def gzipped_size(path):
    _, zipped = tempfile.mkstemp(".zip")
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.write(path)
    return os.path.getsize(zipped)


def fully_int8(content):
    info = inspect(content)
    return info.is_quantized and info.float_ops_between_io() == []


def kernels_of(content):
    return [w for w in inspect(content).weights if not w.is_bias]


def test_pruning_with_keras(mnist, trained, tmp_path):
    (train_images, train_labels), (test_images, test_labels) = mnist
    model, baseline_model_accuracy = trained
    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    # The guide's batch of 128 over 60,000 MNIST images gives 844 steps, 9 mask updates
    # (every 100 steps); over 1,437 digits a batch of 8 and 4 epochs give 648 steps.
    batch_size = 8
    epochs = 4
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step)}
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer="adam",
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=["accuracy"])
    logdir = str(tmp_path / "logs")
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(),
                 tfmot.sparsity.keras.PruningSummaries(log_dir=logdir)]
    model_for_pruning.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs,
                          validation_split=validation_split, callbacks=callbacks, verbose=0)
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels,
                                                               verbose=0)
    model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
    pruned_keras_file = str(tmp_path / "pruned.h5")
    keras.models.save_model(model_for_export, pruned_keras_file.replace(".h5", ".keras"))
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    pruned_tflite_model = converter.convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_and_pruned_tflite_model = converter.convert()
    base_file = tmp_path / "base.tflite"
    base_file.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    pruned_file = tmp_path / "pruned.tflite"
    pruned_file.write_bytes(pruned_tflite_model)
    both_file = tmp_path / "pruned_int8.tflite"
    both_file.write_bytes(quantized_and_pruned_tflite_model)

    # What the guide reports: accuracy kept, 3x smaller gzipped, 10x with int8.
    assert model_for_pruning_accuracy >= baseline_model_accuracy - 0.03
    assert all(w.sparsity >= 0.79 for w in kernels_of(pruned_tflite_model))
    assert gzipped_size(pruned_file) < gzipped_size(base_file) / 2.5
    assert gzipped_size(both_file) < gzipped_size(base_file) / 5  # the guide: 10x (a larger model)
    assert tflite_accuracy(quantized_and_pruned_tflite_model, test_images, test_labels) >= \
        baseline_model_accuracy - 0.03


def test_pruning_comprehensive_guide(mnist, trained, tmp_path):
    (train_images, train_labels), _ = mnist
    base_model, _ = trained
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)  # default schedule

    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return tfmot.sparsity.keras.prune_low_magnitude(layer)
        return layer

    model_for_pruning = keras.models.clone_model(base_model,
                                                 clone_function=apply_pruning_to_dense)
    model_for_pruning.compile(optimizer="adam", loss=loss)
    model_for_pruning.fit(train_images, train_labels, epochs=1, verbose=0,
                          callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    keras_file = str(tmp_path / "pruned_mid_training.keras")
    keras.models.save_model(model_for_pruning, keras_file)
    with tfmot.sparsity.keras.prune_scope():
        loaded_model = keras.models.load_model(keras_file)
    stripped = tfmot.sparsity.keras.strip_pruning(loaded_model)
    dense = [layer for layer in stripped.layers if isinstance(layer, keras.layers.Dense)]
    convs = [layer for layer in stripped.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(np.mean(layer.kernel.numpy() == 0) == pytest.approx(0.5, abs=0.01)
               for layer in dense)
    assert all(np.mean(layer.kernel.numpy() == 0) < 0.05 for layer in convs)

    input_shape = [20]
    x_train = np.random.randn(1, 20).astype(np.float32)
    y_train = keras.utils.to_categorical(np.random.randn(1), num_classes=20)

    class MyDenseLayer(keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]  # the bias is not pruned

    model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(keras.Sequential([
        keras.Input(input_shape), MyDenseLayer(20), keras.layers.Flatten()]))
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam")
    model_for_pruning.fit(x_train, y_train, epochs=1, verbose=0)
    custom = tfmot.sparsity.keras.strip_pruning(model_for_pruning).layers[0]
    assert np.mean(custom.kernel.numpy() == 0) == pytest.approx(0.5, abs=0.01)

    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(i)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    mobile = keras.Model(i, keras.layers.Dense(10)(x))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        mobile, pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack())
    assert [type(w.layer).__name__ for w in pruned.layers if hasattr(w, "transforms")] == [
        "Conv2D"]


def test_qat_training_example(mnist, trained):
    (train_images, train_labels), (test_images, test_labels) = mnist
    model, baseline_model_accuracy = trained
    quantize_model = tfmot.quantization.keras.quantize_model
    q_aware_model = quantize_model(model)
    q_aware_model.compile(optimizer="adam",
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
    train_images_subset = train_images[0:1000]
    train_labels_subset = train_labels[0:1000]
    q_aware_model.fit(train_images_subset, train_labels_subset, batch_size=50, epochs=2,
                      validation_split=0.1, verbose=0)
    _, q_aware_model_accuracy = q_aware_model.evaluate(test_images, test_labels, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(q_aware_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_tflite_model = converter.convert()
    test_accuracy = tflite_accuracy(quantized_tflite_model, test_images, test_labels)

    assert q_aware_model_accuracy >= baseline_model_accuracy - 0.02
    assert fully_int8(quantized_tflite_model)
    assert abs(test_accuracy - q_aware_model_accuracy) <= 0.01  # the guide: same accuracy


def test_qat_comprehensive_guide(mnist, trained, tmp_path):
    (train_images, train_labels), _ = mnist
    base_model, _ = trained
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def apply_quantization_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return layer

    annotated_model = keras.models.clone_model(base_model,
                                               clone_function=apply_quantization_to_dense)
    quant_aware_model = tfmot.quantization.keras.quantize_apply(annotated_model)
    quant_aware_model.compile(optimizer="adam", loss=loss)
    quant_aware_model.fit(train_images, train_labels, epochs=1, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(quant_aware_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    content = converter.convert()
    info = inspect(content)
    assert {w.dtype for w in info.weights if w.op == "FULLY_CONNECTED" and not w.is_bias} == {
        "int8"}  # the Dense layer quantized ...
    assert {w.dtype for w in info.weights if w.op == "CONV_2D" and not w.is_bias} == {
        "float32"}  # ... the convolution left float, as annotated

    annotated_model = tfmot.quantization.keras.quantize_annotate_model(keras.Sequential([
        keras.Input((20,)), keras.layers.Dense(20), keras.layers.Flatten()]))
    quant_aware_model = tfmot.quantization.keras.quantize_apply(annotated_model)
    keras_file = str(tmp_path / "qat.keras")
    keras.models.save_model(quant_aware_model, keras_file)
    with tfmot.quantization.keras.quantize_scope():
        loaded_model = keras.models.load_model(keras_file)
    x = np.random.randn(4, 20).astype(np.float32)
    np.testing.assert_allclose(loaded_model(x), quant_aware_model(x), atol=1e-6)

    with pytest.raises(KmotError, match=r"kmot has no QuantizeConfig.*QuantizeRule"):
        tfmot.quantization.keras.quantize_annotate_layer(keras.layers.Dense(3),
                                                        quantize_config=object())
    with pytest.raises(KmotError, match=r"has none"):
        tfmot.quantization.keras.quantize_apply(base_model)


def test_clustering_example(mnist, trained, tmp_path):
    (train_images, train_labels), (test_images, test_labels) = mnist
    model, baseline_model_accuracy = trained
    cluster_weights = tfmot.clustering.keras.cluster_weights
    CentroidInitialization = tfmot.clustering.keras.CentroidInitialization
    clustering_params = {"number_of_clusters": 16,
                         "cluster_centroids_init": CentroidInitialization.LINEAR}
    clustered_model = cluster_weights(model, **clustering_params)
    opt = keras.optimizers.Adam(learning_rate=1e-5)
    clustered_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            optimizer=opt, metrics=["accuracy"])
    clustered_model.fit(train_images, train_labels, batch_size=500, epochs=1,
                        validation_split=0.1, verbose=0)
    _, clustered_model_accuracy = clustered_model.evaluate(test_images, test_labels, verbose=0)
    final_model = tfmot.clustering.keras.strip_clustering(clustered_model)
    clustered_tflite_file = tmp_path / "clustered.tflite"
    clustered_tflite_file.write_bytes(tf.lite.TFLiteConverter.from_keras_model(final_model)
                                      .convert())
    base_file = tmp_path / "base.tflite"
    base_file.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    assert clustered_model_accuracy >= baseline_model_accuracy - 0.02
    assert all(w.unique_values <= 16 for w in kernels_of(clustered_tflite_file.read_bytes()))
    assert gzipped_size(clustered_tflite_file) < gzipped_size(base_file) / 2.5
    with pytest.raises(KmotError, match=r"no argument\(s\) \['cluster_everything'\]"):
        cluster_weights(model, 8, cluster_everything=True)


def _fit(model, mnist, epochs=1):
    (train_images, train_labels), (test_images, test_labels) = mnist
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, batch_size=128, epochs=epochs, validation_split=0.1,
              verbose=0)
    return model.evaluate(test_images, test_labels, verbose=0)[1]


def _int8(model):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def test_pqat_cqat_pcqat(mnist, trained):
    model, baseline_model_accuracy = trained
    pruning_params = {"pruning_schedule": tfmot.sparsity.keras.ConstantSparsity(
        0.5, begin_step=0, frequency=100)}
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    pruned_model = tfmot.sparsity.keras.prune_low_magnitude(model, **pruning_params)
    pruned_model.compile(optimizer="adam",
                         loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned_model.fit(mnist[0][0], mnist[0][1], epochs=2, batch_size=128, verbose=0,
                     callbacks=callbacks)
    stripped_pruned_model = tfmot.sparsity.keras.strip_pruning(pruned_model)

    # PQAT
    quant_aware_annotate_model = tfmot.quantization.keras.quantize_annotate_model(
        stripped_pruned_model)
    pqat_model = tfmot.quantization.keras.quantize_apply(
        quant_aware_annotate_model,
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    pqat_accuracy = _fit(pqat_model, mnist)
    pqat = _int8(pqat_model)
    assert fully_int8(pqat) and pqat_accuracy >= baseline_model_accuracy - 0.03
    assert min(w.sparsity for w in kernels_of(pqat)) >= 0.499

    # CQAT
    clustered_model = tfmot.clustering.keras.cluster_weights(
        model, number_of_clusters=8,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS)
    _fit(clustered_model, mnist)
    stripped_clustered_model = tfmot.clustering.keras.strip_clustering(clustered_model)
    cqat_model = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped_clustered_model),
        tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme())
    cqat_accuracy = _fit(cqat_model, mnist)
    cqat = _int8(cqat_model)
    assert fully_int8(cqat) and cqat_accuracy >= baseline_model_accuracy - 0.03
    assert max(w.max_unique_per_channel for w in kernels_of(cqat)) <= 8

    # PCQAT
    sparsity_clustered_model = tfmot.clustering.keras.cluster_weights(
        stripped_pruned_model, number_of_clusters=8, preserve_sparsity=True)
    _fit(sparsity_clustered_model, mnist)
    stripped_sparsity_clustered_model = tfmot.clustering.keras.strip_clustering(
        sparsity_clustered_model)
    pcqat_model = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped_sparsity_clustered_model),
        tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity=True))
    pcqat_accuracy = _fit(pcqat_model, mnist)
    pcqat = _int8(pcqat_model)
    assert fully_int8(pcqat) and pcqat_accuracy >= baseline_model_accuracy - 0.04
    assert min(w.sparsity for w in kernels_of(pcqat)) >= 0.499
    assert max(w.max_unique_per_channel for w in kernels_of(pcqat)) <= 8


@keras.saving.register_keras_serializable(package="test_compat")
class ScaledDense(keras.layers.Layer, tfmot.clustering.keras.ClusterableLayer):
    """The clustering guide's custom-layer protocol: the layer names its weights."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], 10), name="kernel")
        self.gain = self.add_weight(shape=(), initializer="ones", name="gain")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel) * self.gain

    def get_clusterable_weights(self):
        return [("kernel", self.kernel)]


def test_clusterable_layer_is_clustered_and_loads_in_cluster_scope(mnist, tmp_path):
    (train_images, train_labels), _ = mnist
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              ScaledDense(name="custom")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layer said which weights: no "left untouched"
        clustered = tfmot.clustering.keras.cluster_weights(model, 8)
    clustered.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clustered.fit(train_images[:256], train_labels[:256], epochs=1, verbose=0)
    path = tmp_path / "clustered.keras"
    clustered.save(path)
    with tfmot.clustering.keras.cluster_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(train_images[:8], verbose=0),
                               clustered.predict(train_images[:8], verbose=0), atol=1e-6)
    stripped = tfmot.clustering.keras.strip_clustering(loaded)
    layer = stripped.get_layer("custom")
    assert len(np.unique(keras.ops.convert_to_numpy(layer.kernel))) <= 8
    assert float(keras.ops.convert_to_numpy(layer.gain)) != 0  # the other weight trains freely


@pytest.mark.parametrize("module, name, native", [
    ("sparsity", "PruneLowMagnitude", r"kmot\.core\.OptimizedLayer.*strip_pruning"),
    ("clustering", "ClusterWeights", r"kmot\.core\.OptimizedLayer.*strip_clustering"),
    ("quantization", "QuantizeWrapperV2", r"kmot\.core\.OptimizedLayer.*is_qat_model"),
    ("quantization", "QuantizeRegistry", r"QuantizeRule.*get_quantize_rule"),
])
def test_tfmots_own_classes_name_the_native_way(module, name, native):
    namespace = getattr(tfmot, module).keras
    with pytest.raises(KmotError, match=rf"{module}\.keras\.{name} is tfmot's own.*{native}"):
        getattr(namespace, name)
    assert not hasattr(namespace, name)  # an AttributeError too: hasattr and getattr work
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        namespace.no_such_name
