"""CLI fuzz: every command x a table of bad inputs -> exit 2, no traceback, nothing written.

Each command's input slots (the model, the data, the output, a name, a version,
the registry root, ...) are filled one at a time with each bad input that fits the
slot, all other arguments good. Every run must exit 2 (``error: ...`` or a usage
error), print no traceback, and leave the folder holding every input and output
exactly as it was. Runs are in-process (TensorFlow loads once); each input tried
counts in ``faults.COUNTS["bad_inputs"]``, each misbehaviour in ``["failures"]``.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from faults import COUNTS, unwritable_folder
from typer.testing import CliRunner

from kmot.cli import app
from kmot.export import to_litert

runner = CliRunner()
MARKUP = "[red]x[/]"
MARKUP_FILE = "[red]x[bold]"  # a file name holds no "/"


def tree(folder: Path) -> dict:
    """Every path under ``folder``, files with their size and mtime: any write shows.

    A folder's own mtime is left out: it changes when a file is created and removed
    again inside it (SQLite's journal, a writability probe), which writes nothing.
    """
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            if p.is_file() else "folder" for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good inputs, a registry with one model, and bad files of every kind, in one folder."""
    d = tmp_path_factory.mktemp("fuzz")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="tiny")
    model.save(d / "m.keras")
    to_litert(model, d / "m.tflite")
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4), dtype=np.float32), np.arange(32) % 3
    np.savez(d / "ok.npz", x=x, y=y)
    (d / "recipe.yaml").write_text("name: r\ntraining: {epochs: 1}\nsteps:\n  - prune: "
                                   "{final_sparsity: 0.5}\n")
    (d / "budgets.yaml").write_text("max_accuracy_drop: 0.5\n")
    assert runner.invoke(app, ["bench", str(d / "m.tflite"), "--data", str(d / "ok.npz"),
                               "--out", str(d / "report"), "--runs", "2", "--warmup", "0",
                               "--no-memory"]).exit_code == 0
    root = d / "registry"
    for _ in range(2):
        assert runner.invoke(app, ["registry", "push", str(d / "m.tflite"), "--name", "tiny",
                                   "--root", str(root)]).exit_code == 0
    (d / "a-file").write_text("not a folder")
    (d / "a-folder").mkdir()
    (d / "empty").write_bytes(b"")
    (d / "random").write_bytes(rng.bytes(512))
    (d / MARKUP_FILE).write_bytes(rng.bytes(64))
    (d / "junk-registry").mkdir()
    (d / "junk-registry" / "index.sqlite").write_bytes(rng.bytes(4096))
    for name, content in (("m.keras", (d / "m.keras").read_bytes()),
                          ("m.tflite", (d / "m.tflite").read_bytes()),
                          ("ok.npz", (d / "ok.npz").read_bytes())):
        (d / f"truncated-{name}").write_bytes(content[: len(content) // 2])
    data = {"npy": None, "object": np.array([{"a": 1}] * 32, dtype=object),
            "text": np.array([["a"] * 4] * 32), "complex": x.astype(np.complex64),
            "shape": rng.random((32, 5), dtype=np.float32), "rank": rng.random(32)}
    for kind, bad in data.items():
        if kind == "npy":
            with open(d / "data-npy.npz", "wb") as f:
                np.save(f, x)
        else:
            np.savez(d / f"data-{kind}.npz", x=bad, y=y)
    for kind, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        bad = x.copy()
        bad[7, 2] = value
        np.savez(d / f"data-{kind}.npz", x=bad, y=y)
    np.savez(d / "data-only-y.npz", y=y)
    np.savez(d / "data-short-y.npz", x=x, y=y[:5])
    np.savez(d / "data-no-arrays.npz")
    (d / "report-broken.json").write_text('{"schema_version": ')
    (d / "report-wrong.json").write_text(json.dumps({"hello": "world"}))
    (d / "budgets-unknown.yaml").write_text("max_p95_ms: 3\n")
    (d / "budgets-broken.yaml").write_text("max_p50_ms: [5\n")
    (d / "budgets-markup.yaml").write_text(f"'{MARKUP}': 1\n")
    (d / "budgets-duplicate.yaml").write_text("max_accuracy_drop: 0.01\nmax_accuracy_drop: 0.9\n")
    (d / "recipe-broken.yaml").write_text("name: [unclosed\n")
    (d / "recipe-invalid.yaml").write_text("name: r\nsteps:\n  - cluster: {number_of_clusters: 1}\n")
    read_only = unwritable_folder(d / "read-only")
    yield d, read_only
    (d / "read-only").chmod(0o755)


# Bad files for a slot that wants an existing file of some kind.
def bad_files(d: Path, good: str) -> list[tuple[str, str]]:
    suffix = Path(good).suffix
    return [
        ("missing", str(d / f"missing{suffix}")),
        ("a folder", str(d / "a-folder")),
        ("empty", str(d / "empty")),
        ("random bytes", str(d / "random")),
        ("truncated", str(d / f"truncated-{good}")) if (d / f"truncated-{good}").exists()
        else ("random bytes again", str(d / "random")),
        ("markup name", str(d / MARKUP_FILE)),
        ("markup path", str(d / f"x[/]{suffix}")),
        ("path-like name", str(d / "a-folder" / ".." / ".." / "nowhere" / f"x{suffix}")),
        ("under a file", str(d / "a-file" / f"x{suffix}")),
    ]


def bad_data(d: Path) -> list[tuple[str, str]]:
    kinds = ["npy", "object", "text", "complex", "shape", "rank", "nan", "inf", "-inf",
             "only-y", "no-arrays"]
    return bad_files(d, "ok.npz") + [(f"data {k}", str(d / f"data-{k}.npz")) for k in kinds]


def bad_outputs(d: Path, read_only: Path, name: str) -> list[tuple[str, str]]:
    return [("output under a file", str(d / "a-file" / name)),
            ("read-only output", str(read_only / name))]


def cases(command: str, d: Path, read_only: Path) -> list[tuple[str, list[str]]]:
    """(label, argv) for every bad input of every slot of ``command``."""
    m, tfl, ok = str(d / "m.keras"), str(d / "m.tflite"), str(d / "ok.npz")
    out = str(d / "out")
    root = ["--root", str(d / "registry")]
    out_cases: list[tuple[str, list[str]]] = []

    def slot(name, options, build):
        for label, value in options:
            out_cases.append((f"{name}: {label}", build(value)))

    if command == "convert":
        slot("model", bad_files(d, "m.keras") + [("a .tflite", tfl), ("an .npz", ok)],
             lambda v: ["convert", v, "-o", str(d / "out.tflite")])
        slot("calibration", bad_data(d), lambda v: ["convert", m, "-o", str(d / "out.tflite"),
                                                    "--quantize", "int8", "--calibration", v])
        slot("output", [("a folder", str(d / "a-folder")), ("the model itself", m),
                        *bad_outputs(d, read_only, "out.tflite")],
             lambda v: ["convert", m, "-o", v])
        slot("option", [("quantize markup", ["--quantize", MARKUP]),
                        ("io type", ["--io-type", "int4"]), ("samples 0", ["--samples", "0"]),
                        ("keep-float unknown", ["--quantize", "int8", "--calibration", ok,
                                                "--keep-float", MARKUP])],
             lambda v: ["convert", m, "-o", str(d / "out.tflite"), *v])
    elif command == "prune-channels":
        slim = str(d / "slim.keras")
        slot("model", bad_files(d, "m.keras") + [("a .tflite", tfl), ("an .npz", ok)],
             lambda v: ["prune-channels", v, "-o", slim])
        slot("data", bad_data(d), lambda v: ["prune-channels", m, "-o", slim, "--importance",
                                             "taylor", "--data", v])
        slot("output", [("a folder", str(d / "a-folder")), ("the model itself", m),
                        ("a .tflite", str(d / "slim.tflite")), ("none", None),
                        *bad_outputs(d, read_only, "slim.keras")],
             lambda v: ["prune-channels", m] + ([] if v is None else ["-o", v]))
        slot("option", [("sparsity 1", ["--sparsity", "1"]), ("sparsity -0.1", ["--sparsity", "-0.1"]),
                        ("importance markup", ["--importance", MARKUP]),
                        ("allocation", ["--allocation", "everywhere"]),
                        ("round-to 0", ["--round-to", "0"]),
                        ("taylor without data", ["--importance", "taylor"])],
             lambda v: ["prune-channels", m, "-o", slim, *v])
    elif command == "inspect":
        slot("file", bad_files(d, "m.tflite") + [("a .keras", m), ("an .npz", ok)],
             lambda v: ["inspect", v])
    elif command == "layer-error":
        slot("model", bad_files(d, "m.keras"), lambda v: ["layer-error", v, "--calibration", ok])
        slot("calibration", bad_data(d), lambda v: ["layer-error", m, "--calibration", v])
        slot("option", [("quantize markup", ["--quantize", MARKUP]),
                        ("worst 0", ["--worst", "0"])],
             lambda v: ["layer-error", m, "--calibration", ok, *v])
    elif command == "bench":
        def bench(models=(tfl,), data=ok, out_=out, extra=()):
            return ["bench", *models, "--data", data, "--out", out_, "--runs", "2",
                    "--warmup", "0", "--no-memory", *extra]

        slot("model", bad_files(d, "m.tflite") + [("an .npz", ok)],
             lambda v: bench(models=(tfl, v)))
        slot("data", bad_data(d) + [("labels of another length", str(d / "data-short-y.npz"))],
             lambda v: bench(data=v))
        slot("out", [("a file", str(d / "a-file")), *bad_outputs(d, read_only, "out")],
             lambda v: bench(out_=v))
        slot("option", [("runs 0", ["--runs", "0"]), ("threads -1", ["--threads", "-1"]),
                        ("metric markup", ["--metric", MARKUP]),
                        ("baseline markup", ["--baseline", MARKUP]),
                        ("registry baseline without a name", ["--baseline", "registry:"]),
                        ("registry baseline unknown", ["--baseline", "registry:nope",
                                                       "--registry-root", str(d / "registry")])],
             lambda v: bench(extra=v))
    elif command == "gate":
        budgets = str(d / "budgets.yaml")
        slot("report", bad_files(d, "report.json") + [
            ("broken json", str(d / "report-broken.json")),
            ("json of another schema", str(d / "report-wrong.json")),
            ("a folder without report.json", str(d / "a-folder"))],
            lambda v: ["gate", v, "--budgets", budgets])
        slot("budgets", bad_files(d, "budgets.yaml") + [
            (k, str(d / f"budgets-{k}.yaml")) for k in ("unknown", "broken", "markup",
                                                        "duplicate")],
            lambda v: ["gate", str(d / "report"), "--budgets", v])
        slot("candidate", [("markup", MARKUP), ("unknown", "nope")],
             lambda v: ["gate", str(d / "report"), "--budgets", budgets, "--candidate", v])
    elif command == "optimize":
        def optimize(model=m, recipe=str(d / "recipe.yaml"), data=ok, val=ok, out_=out):
            return ["optimize", model, "--recipe", recipe, "--data", data, "--val", val,
                    "--out", out_]

        slot("model", bad_files(d, "m.keras"), lambda v: optimize(model=v))
        slot("recipe", bad_files(d, "recipe.yaml") + [
            ("broken yaml", str(d / "recipe-broken.yaml")),
            ("invalid step", str(d / "recipe-invalid.yaml"))], lambda v: optimize(recipe=v))
        slot("data", bad_files(d, "ok.npz") + [
            (f"data {k}", str(d / f"data-{k}.npz")) for k in RECIPE_DATA],
             lambda v: optimize(data=v))
        slot("val", bad_files(d, "ok.npz") + [
            (f"data {k}", str(d / f"data-{k}.npz")) for k in RECIPE_DATA],
             lambda v: optimize(val=v))
        slot("out", [("a file", str(d / "a-file")), *bad_outputs(d, read_only, "out")],
             lambda v: optimize(out_=v))
    elif command == "demo":
        slot("out", [("a file", str(d / "a-file")), *bad_outputs(d, read_only, "demo")],
             lambda v: ["demo", "--out", v])
        slot("option", [("epochs 0", ["--epochs", "0"]), ("epochs -1", ["--epochs", "-1"]),
                        ("finetune-epochs 0", ["--finetune-epochs", "0"]),
                        ("epochs markup", ["--epochs", MARKUP])],
             lambda v: ["demo", "--out", out, *v])
    elif command == "registry push":
        def push(artifact=tfl, extra=(), root_=root):
            return ["registry", "push", artifact, "--name", "tiny", *extra, *root_]

        slot("artifact", [f for f in bad_files(d, "m.tflite") if f[0] not in
                          ("empty", "random bytes", "truncated", "markup name")],
             lambda v: push(artifact=v))
        slot("name", [("markup", MARKUP), ("path-like", "../x"), ("absolute", "/etc/passwd"),
                      ("empty", ""), ("too long", "n" * 300)],
             lambda v: ["registry", "push", tfl, "--name", v, *root])
        slot("report", [f for f in bad_files(d, "report.json")] + [
            ("broken json", str(d / "report-broken.json"))],
            lambda v: push(extra=("--report", v)))
        slot("meta", [("no equals", "k"), ("empty key", "=v")],
             lambda v: push(extra=("--meta", v)))
        slot("root", [("a file", str(d / "a-file")), ("under a file", str(d / "a-file" / "r")),
                      ("read-only", str(read_only / "registry")),
                      ("junk index", str(d / "junk-registry"))],
             lambda v: push(root_=("--root", v)))
    elif command.startswith("registry "):
        verb = command.split()[1]
        tail = {"list": [], "show": [], "history": [], "rollback": [], "promote": ["1"],
                "pull": ["-o", str(d / "pulled.tflite")]}[verb]
        names = [("unknown", "nope"), ("markup", MARKUP), ("path-like", "../x"),
                 ("absolute", "/etc/passwd")]
        if verb != "list":
            slot("name", names, lambda v: ["registry", verb, v, *tail, *root])
        else:
            slot("name", names, lambda v: ["registry", "list", v, *root])
        slot("root", [("a file", str(d / "a-file")), ("junk index", str(d / "junk-registry"))],
             lambda v: ["registry", verb, *([] if verb == "list" else ["tiny"]), *tail,
                        "--root", v])
        if verb in ("show", "promote"):
            slot("version", [("0", "0"), ("-1", "-1"), ("99", "99"), ("markup", MARKUP)],
                 lambda v: ["registry", verb, "tiny", v, *root])
        if verb == "pull":
            slot("version", [("0", "0"), ("99", "99")],
                 lambda v: ["registry", "pull", "tiny", "--version", v, "-o",
                            str(d / "pulled.tflite"), *root])
            slot("output", [("under a file", str(d / "a-file" / "x.tflite")),
                            ("read-only", str(read_only / "x.tflite"))],
                 lambda v: ["registry", "pull", "tiny", "-o", v, *root])
        if verb == "rollback":
            out_cases.append(("nothing to roll back to", ["registry", "rollback", "tiny", *root]))
    return out_cases


# Data kinds for `optimize`: each must be refused before any fine-tuning writes a step.
RECIPE_DATA = ("npy", "object", "text", "shape", "nan", "inf", "only-y", "no-arrays")

COMMANDS = ["convert", "prune-channels", "inspect", "layer-error", "bench", "gate", "optimize",
            "demo",
            "registry push", "registry list", "registry show", "registry promote",
            "registry rollback", "registry history", "registry pull"]


def misbehaviour(result, before: dict, after: dict) -> str | None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {result.exception}"
    if result.exit_code != 2:
        return f"exit {result.exit_code}"
    if "Traceback" in result.output:
        return "printed a traceback"
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        return f"changed files: {sorted({path for path, _ in changed})}"
    return None


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_inputs_exit_two_with_nothing_written(world, command):
    d, read_only = world
    failures = []
    table = cases(command, d, read_only)
    assert table, command
    for label, args in table:
        COUNTS["bad_inputs"] += 1
        before = tree(d)
        result = runner.invoke(app, args)
        problem = misbehaviour(result, before, tree(d))
        if problem:
            COUNTS["failures"] += 1
            last = (result.output.strip().splitlines() or [""])[-1][:300]
            failures.append(f"{command} [{label}]: {problem}; output: {last}")
    assert not failures, "\n".join(failures)
