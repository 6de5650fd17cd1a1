"""Registering kmot's Keras classes as soon as Keras is imported.

A ``.keras`` file names the classes it was saved with (``kmot>OptimizedLayer``,
``kmot>PruneTransform``, ...), and Keras finds a class only once the module
defining it has run. ``import kmot`` must stay light (it never imports Keras,
which imports TensorFlow), so it installs a one-shot import hook instead: when
Keras finishes importing, the packages below are imported and their classes
registered. A model saved mid-training then loads with ``import kmot`` alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["PACKAGES", "install", "register"]

#: Packages whose modules define every class a kmot ``.keras`` file can name.
PACKAGES = ("kmot.core", "kmot.sparsity", "kmot.clustering", "kmot.quantization",
            "kmot.compat.tfmot")  # its QuantizeAnnotate: an annotated model saves too


def register() -> None:
    """Imports the packages that define kmot's serializable classes."""
    for name in PACKAGES:
        importlib.import_module(name)


class _RegisterAfter(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register()

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _KerasHook(importlib.abc.MetaPathFinder):
    """Finds ``keras`` through the other finders, then registers once it has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; and no recursion in the lookup below
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfter(spec.loader)
        return spec


def install() -> None:
    """Registers now if Keras is already imported, otherwise as soon as it is."""
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(f, _KerasHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasHook())
