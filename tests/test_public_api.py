"""The public surface is pinned: a change here is a change of the contract."""

import subprocess
import sys

import kmot

PUBLIC = {
    "core": ["AddWeight", "Carried", "ChannelGraph", "ChannelGroup", "ChannelUse", "KeepZerosTransform", "Kernel", "KernelLayout", "LayerSelector",
             "OptimizedLayer", "Reparameterized", "SharedValuesTransform", "TransformSummaries",
             "WeightTransform", "collect_summaries",
             "WeightView", "as_functional", "channel_graph", "clone_layer", "clone_model", "copy_transform",
             "effective_weights", "find_wrappers", "flatten_chain", "input_shapes", "is_graph_model",
             "kernel_layouts", "kernels", "make_predicate", "register_kernel_layout", "rewrap",
             "simulations", "strip", "unknown_weights", "walk_layers", "walk_operations",
             "weight_key", "weight_keys"],
    "export": ["DEFAULT_NUM_SAMPLES", "TARGETS", "CheckReport", "InputSpec", "LayerError",
               "LayerParity", "LiteRTModel", "ModelInspection", "ParityReport", "PatternCheck",
               "QUANTIZE_MODES", "QuantizationErrorReport",
               "calibration_samples", "check_compatibility", "check_tflite_pattern", "input_specs", "inspect", "kernel_agreement", "load_model", "parity",
               "quantization_error", "to_litert", "to_onnx", "to_saved_model", "write_atomic"],
    "data": ["digits", "digits_cnn", "mnist1d"],
    "decomposition": ["DEFAULT_ENERGY", "METHODS", "DecompositionError", "FactorizationSummary",
                      "LayerFactorization", "factorize", "summary"],
    "distillation": ["DistillationError", "distill"],
    "recipes": ["PipelineResult", "Recipe", "RecipeError", "load_recipe", "optimize"],
    "search": ["STAGES", "TECHNIQUES", "SearchError", "SearchResult", "SearchSpace", "load_space",
               "search"],
    "registry": ["GcResult", "ModelVersion", "Promotion", "RegisteredModel", "Registry",
                 "VerifyProblem", "VerifyResult", "default_root"],
    "clustering": ["CENTROID_INITS", "ClusterSummary", "ClusterTransform", "ClusteringSummaries",
                   "WeightClusters",
                   "cluster_weights", "clusterable_weights", "init_centroids", "strip_clustering",
                   "summary"],
    "quantization": ["DEPTHWISE", "SCHEMES", "ActivationQuantizer", "FakeQuantTransform",
                     "QuantizationError", "QuantizationSummaries", "QuantizeRule", "fold_batch_norms", "foldable_pairs",
                     "is_qat_model", "is_weight_qat_model", "quantize_model", "rounding_noise_floor",
                     "rule_for"],
    "evaluate": ["SCHEMA_VERSION", "Budgets", "CandidateResult", "Check", "GateResult", "Provenance",
                 "Report", "Step",
                 "compare", "gate", "load_budgets", "measure_peak_memory", "report_schema"],
    "sparsity": ["ChannelMaskTransform", "ConstantSparsity", "PolynomialDecay", "PruneTransform", "PruningSummaries",
                 "PruningSchedule", "ScaledSparsity", "ScheduleError", "SparsitySummary",
                 "UpdatePruningStep", "WeightSparsity", "channel_groups", "mask_channels",
                 "prunable_weights", "prune_channels", "prune_low_magnitude",
                 "remove_masked_channels", "strip_pruning", "summary"],
}


def test_public_names_are_pinned():
    for package, names in PUBLIC.items():
        module = getattr(kmot, package)
        assert sorted(module.__all__) == sorted(names), package
        for name in names:
            assert hasattr(module, name), f"kmot.{package}.{name}"


def test_errors_share_one_base():
    from kmot import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), kmot.KmotError)


def test_import_kmot_stays_lean():
    code = ("import sys, kmot; heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_export_does_not_load_the_litert_runtime_until_used():
    # (Keras on the TensorFlow backend imports TensorFlow itself.)
    code = "import sys, kmot.export; print('ai_edge_litert' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split()[-1:] == ["False"], result.stdout + result.stderr


def test_every_serializable_class_registers_with_import_kmot():
    from pathlib import Path

    from kmot._serializable import PACKAGES

    root = Path(kmot.__file__).parent
    for path in root.rglob("*.py"):
        if "register_keras_serializable(" in path.read_text():
            module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
            assert any(module.startswith(p + ".") for p in PACKAGES), module


def test_any_kmot_package_imported_first_works_and_registers_every_class():
    """`import kmot.sparsity` in a fresh interpreter used to fail: Keras, imported
    half-way through it, registered the other packages, which read its names before
    it had them (AttributeError: partially initialized module 'kmot.sparsity')."""
    import pkgutil
    from concurrent.futures import ThreadPoolExecutor

    packages = ["kmot.sparsity.schedule", "kmot.core.channels"] + [
        info.name for info in pkgutil.walk_packages(kmot.__path__, "kmot.") if info.ispkg]
    check = ("import {name}, keras; missing = [n for n in ('kmot>OptimizedLayer', "
             "'kmot>PolynomialDecay', 'kmot>QuantizedGRU', 'kmot.compat>QuantizeAnnotate') "
             "if keras.saving.get_registered_object(n) is None]; print(missing)")

    def run(name):
        return name, subprocess.run([sys.executable, "-c", check.format(name=name)],
                                    capture_output=True, text=True)

    with ThreadPoolExecutor(2) as pool:
        for name, result in pool.map(run, packages):
            assert result.returncode == 0, (name, result.stderr[-2000:])
            assert result.stdout.split("\n")[-2] == "[]", (name, result.stdout)
