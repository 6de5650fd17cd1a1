import re

import keras
import pytest

from kmot.core import make_predicate, walk_layers
from kmot.errors import LayerSelectionError


@pytest.fixture
def layers():
    return [
        keras.layers.Conv2D(2, 3, name="block1_conv"),
        keras.layers.Conv2D(2, 3, name="block2_conv"),
        keras.layers.Dense(2, name="head"),
    ]


@pytest.mark.parametrize(
    "selector, expected",
    [
        (None, ["block1_conv", "block2_conv", "head"]),
        ("head", ["head"]),
        (re.compile(r"block\d_conv"), ["block1_conv", "block2_conv"]),
        (re.compile("block"), []),  # regexes match the whole name
        (keras.layers.Conv2D, ["block1_conv", "block2_conv"]),
        (keras.layers.Layer, ["block1_conv", "block2_conv", "head"]),
        (lambda layer: layer.name.endswith("2_conv"), ["block2_conv"]),
        (["head", keras.layers.Conv2D], ["block1_conv", "block2_conv", "head"]),
    ],
)
def test_selector_kinds(layers, selector, expected):
    pred = make_predicate(selector)
    assert [layer.name for layer in layers if pred(layer)] == expected


def test_subclass_of_selected_class_matches():
    class MyDense(keras.layers.Dense):
        pass

    assert make_predicate(keras.layers.Dense)(MyDense(2))


@pytest.mark.parametrize("bad", [3, object(), int])
def test_bad_selector_is_named(bad):
    with pytest.raises(LayerSelectionError, match=r"Received: layers="):
        make_predicate(bad)


def test_walk_layers_visits_nested_and_shared_once():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inner_d")], name="inner")
    shared = keras.layers.Dense(4, name="shared")
    a, b = keras.Input((4,)), keras.Input((4,))
    out = keras.layers.Add(name="add")([inner(shared(a)), shared(b)])
    model = keras.Model([a, b], out)
    names = [layer.name for layer in walk_layers(model)]
    assert sorted(names) == ["add", "inner_d", "shared"]
