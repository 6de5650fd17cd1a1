"""The quick start's recipe (docs/quickstart.md, step 4) over several baselines.

Each baseline is trained as the page trains it (the digits CNN, 10 epochs, no seed) in
a fresh process, then the page's recipe (2 epochs of QAT, int8, gate
``max_accuracy_drop: 0.01``) runs on it at a constant rate and with the cosine
schedule. One JSON line per baseline and schedule: the baseline's and the int8
model's accuracy, and whether the gate passed.

    TF_CPP_MIN_LOG_LEVEL=3 python benchmarks/quickstart.py [--baselines 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SCHEDULES = ("constant", "cosine")


def one_baseline(index: int) -> None:
    from kmot.data import digits, digits_cnn
    from kmot.recipes import optimize

    x_train, y_train, x_test, y_test = digits()
    model = digits_cnn()
    model.fit(x_train, y_train, epochs=10, batch_size=64, verbose=0)
    with tempfile.TemporaryDirectory() as work:
        model.save(f"{work}/model.keras")
        for schedule in SCHEDULES:
            recipe = {"name": "digits_qat", "training": {"epochs": 2, "schedule": schedule},
                      "steps": ["quantize"], "export": {"quantize": "int8"},
                      "gate": {"max_accuracy_drop": 0.01}}
            result = optimize(f"{work}/model.keras", recipe, train_data=(x_train, y_train),
                              val_data=(x_test, y_test), out_dir=f"{work}/{schedule}",
                              progress=False)
            accuracy = {c.name: c.metrics["accuracy"] for c in result.report.candidates}
            print(json.dumps({"baseline_index": index, "schedule": schedule,
                              "baseline": round(accuracy["baseline"], 4),
                              "int8": round(accuracy["digits_qat"], 4),
                              "gate_passed": result.passed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baselines", type=int, default=8)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one_baseline(args.one)
        return
    # A fresh process per baseline: optimize seeds Keras, so baselines trained in one
    # process after the first would all be the same.
    for index in range(args.baselines):
        subprocess.run([sys.executable, __file__, "--one", str(index)], check=True)


if __name__ == "__main__":
    main()
