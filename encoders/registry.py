"""Kept importable for packages written against it: the registry class lives in :mod:`common.registry`."""
from common.registry import Registry

__all__ = ["Registry"]
