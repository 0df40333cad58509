"""Suites: each turns encoders (+ cached features) into result rows, and registers a spec of what it
needs and offers (:mod:`benchmarks.suites.spec`). Every module of this package is imported here, so
adding a suite is adding one module; other packages add theirs through the
``vision_encoder_eval.suites`` entry-point group."""
from __future__ import annotations

import importlib
import pkgutil

from .base import LoadedEncoder, RunContext
from .spec import SUITES, DataNeeds, NoOptions, SuiteSpec, register_suite, suite_specs

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SUITES", "DataNeeds", "LoadedEncoder", "NoOptions", "RunContext", "SuiteSpec", "register_suite", "suite_specs"]
