"""The README's Python examples run, in order, as a user would paste them."""

import re
from pathlib import Path

import keras
import pytest

import kmot

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch, digits_data):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    x_train, y_train, x_test, y_test = digits_data
    model = kmot.data.digits_cnn()
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    namespace = {"keras": keras, "kmot": kmot, "model": model, "x_train": x_train,
                 "y_train": y_train, "x_test": x_test, "y_test": y_test,
                 "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"README block {index}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - report which block broke
            pytest.fail(f"README python block {index} failed: {type(err).__name__}: {err}\n{block}")
