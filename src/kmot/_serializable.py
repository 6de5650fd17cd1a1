"""Registering kmot's Keras classes as soon as Keras is imported.

A ``.keras`` file names the classes it was saved with (``kmot>OptimizedLayer``,
``kmot>PruneTransform``, ...), and Keras finds a class only once the module
defining it has run. ``import kmot`` must stay light (it never imports Keras,
which imports TensorFlow), so it installs a one-shot import hook instead: when
Keras finishes importing, the packages below are imported and their classes
registered. A model saved mid-training then loads with ``import kmot`` alone.

When Keras is first imported by a kmot module (``import kmot.sparsity`` in a fresh
interpreter), that module and the packages it is part of are still half-run, and
importing the others now would read names they do not have yet. Registration then
waits for the last kmot module under way to finish: every ``kmot.*`` module loads
through `_KmotHook` until registration is done.
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


_state = {"registered": False, "pending": False}


def _kmot_import_under_way(done: str = "") -> bool:
    return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items())
               if name.startswith("kmot.") and name != done)


def register(done: str = "") -> None:
    """Imports the packages that define kmot's serializable classes (later, when a
    kmot module is still being imported: see the module's docstring).

    Args:
        done: a module that has just run (its import is not over yet).
    """
    if _kmot_import_under_way(done):
        _state["pending"] = True
        return
    _state["pending"] = False
    for name in PACKAGES:
        importlib.import_module(name)
    _state["registered"] = True
    for finder in [f for f in sys.meta_path if isinstance(f, _KmotHook)]:
        sys.meta_path.remove(finder)


class _RegisterAfter(importlib.abc.Loader):
    def __init__(self, loader, when=lambda: True):
        self._loader = loader
        self._when = when

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if self._when():
            register(done=module.__name__)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _KmotHook(importlib.abc.MetaPathFinder):
    """Finds ``kmot.*`` modules through the other finders; after each has run, a
    registration that had to wait is done."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("kmot."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfter(spec.loader, lambda: _state["pending"])
                return spec
        return None


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
    if not _state["registered"] and not any(isinstance(f, _KmotHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _KmotHook())
