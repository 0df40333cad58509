"""Imports deferred until first use: start-up time every process of a run would otherwise pay.

timm imports ``wandb`` (when installed) at import time only to learn whether it is there; lmms-eval
installs it, and importing it costs about 1.3 s per process on a 2-core machine. A lazy module under
its name answers that question for free and loads the real package the first time an attribute is read
(lmms-eval's W&B logging, if a user turns it on).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a package until one of its attributes is read, then imports the real one.

    Not ``importlib.util.LazyLoader``: on Python 3.11 the import statement itself reads ``__spec__`` of a
    module found in ``sys.modules``, which makes a lazy module load at once.
    """

    def __getattr__(self, attr: str):
        if attr == "__file__":  # inspect.getmodule reads it of every module in sys.modules: no use of the package
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def defer_import(name: str) -> None:
    """Put a stand-in for package ``name`` in ``sys.modules`` (nothing when it is imported already or absent)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    stand_in = DeferredModule(name)
    stand_in.__spec__ = spec  # what importlib.util.find_spec answers for a module in sys.modules (accelerate asks)
    sys.modules[name] = stand_in


def defer_slow_imports() -> None:
    """The packages other libraries import at start-up without using them here (see the module docstring)."""
    defer_import("wandb")
