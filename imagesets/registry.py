"""Dataset kinds by name, and the spec syntax that selects one: ``kind[:key=value[:key=value...]]``.

A kind is an ``ImageSplit`` subclass registered with ``@register_dataset("name")``; it declares its
spec parameters in ``PARAMS`` and its split names in ``SPLITS``. A second registration of a name is an
error. Installed packages can add kinds through the ``vision_encoder_eval.datasets`` entry-point group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from common.registry import Registry

from .base import ImageSplit

ENTRY_POINT_GROUP = "vision_encoder_eval.datasets"

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One ``key=value`` of a dataset spec: its type, default (none = required), and bounds."""

    type: type
    default: Any = _REQUIRED
    help: str = ""
    min: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        text = f"{self.type.__name__}"
        if self.min is not None:
            text += f" >= {self.min:g}"
        if self.choices is not None:
            text += f" in {list(self.choices)}"
        text += ", required" if self.required else f", default {self.default!r}"
        return f"{text}: {self.help}" if self.help else text

    def convert(self, kind: str, key: str, raw: str) -> Any:
        """Parse ``raw`` into this parameter's type, or raise ValueError naming the valid values."""
        try:
            if self.type is bool:
                lowered = raw.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                value: Any = lowered in ("1", "true", "yes")
            else:
                value = self.type(raw)
        except ValueError:
            raise ValueError(f"{kind}: {key}={raw!r} is not a valid {self.describe()}") from None
        if self.min is not None and value < self.min:
            raise ValueError(f"{kind}: {key}={raw!r} is too small; expected {self.describe()}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{kind}: {key}={raw!r} is not one of {list(self.choices)}")
        if self.type is str and not value:
            raise ValueError(f"{kind}: {key}= is empty; expected {self.describe()}")
        return value


S = TypeVar("S", bound=type)


def _check_name(name: str) -> None:
    if not name or ":" in name or "=" in name:
        raise ValueError(f"dataset kind name {name!r} must be non-empty and contain neither ':' nor '='")


def _check_kind(name: str, cls: type) -> None:
    """A dataset kind needs a name usable in a spec and the class attributes the specs read."""
    _check_name(name)
    for attr in ("PARAMS", "SPLITS"):
        if not hasattr(cls, attr):
            raise TypeError(f"dataset kind {name!r}: {cls.__qualname__} must define {attr}")


KINDS: Registry[type[ImageSplit]] = Registry("dataset kind", entry_point_group=ENTRY_POINT_GROUP, check=_check_kind)


def register_dataset(name: str) -> Callable[[S], S]:
    """Class decorator: register an ``ImageSplit`` subclass as dataset kind ``name``.

    The class must define ``PARAMS: dict[str, Param]``, ``SPLITS: tuple[str, ...]`` and accept
    ``cls(spec=..., split=..., **params)`` with every parameter resolved.
    """
    _check_name(name)  # refused before the class is even defined
    return KINDS.register(name)  # type: ignore[return-value]


def dataset_kinds() -> list[str]:
    """Names of all registered dataset kinds, sorted."""
    return KINDS.names()


def get_kind(name: str) -> type[ImageSplit]:
    """The class registered as ``name``; ValueError listing the registered names if there is none."""
    if name not in KINDS:
        raise ValueError(f"unknown dataset kind {name!r}; valid kinds: {', '.join(KINDS.names())}")
    return KINDS.get(name)


def _split_segments(spec: str) -> list[str]:
    # A segment without '=' continues the previous value, so paths that contain ':' survive.
    segments: list[str] = []
    for part in spec.split(":"):
        if segments and "=" not in part and len(segments) > 1:
            segments[-1] += ":" + part
        else:
            segments.append(part)
    return segments


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a spec ``kind[:key=value...]`` into the kind and its typed parameters.

    Only the keys written in the spec are returned (defaults are filled by ``resolve_params``).
    Raises ValueError for an unknown kind, an unknown or repeated key, or a value of the wrong type,
    naming the valid choices.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty dataset spec {spec!r}; valid kinds: {', '.join(dataset_kinds())}")
    kind, *rest = _split_segments(spec.strip())
    cls = get_kind(kind)
    params: dict[str, Any] = {}
    for segment in rest:
        key, sep, raw = segment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{kind}: spec segment {segment!r} in {spec!r} is not key=value")
        if key not in cls.PARAMS:
            valid = ", ".join(f"{k} ({p.describe()})" for k, p in cls.PARAMS.items()) or "none"
            raise ValueError(f"{kind}: unknown key {key!r} in {spec!r}; valid keys: {valid}")
        if key in params:
            raise ValueError(f"{kind}: key {key!r} given twice in {spec!r}")
        params[key] = cls.PARAMS[key].convert(kind, key, raw)
    return kind, params


def resolve_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the kind's defaults filled in; ValueError naming any missing required key."""
    cls = get_kind(kind)
    missing = [k for k, p in cls.PARAMS.items() if p.required and k not in params]
    if missing:
        raise ValueError(
            f"{kind}: missing required key(s) {', '.join(missing)}; write e.g. "
            + ":".join([kind] + [f"{k}=<{cls.PARAMS[k].type.__name__}>" for k in missing])
        )
    return {k: params.get(k, p.default) for k, p in cls.PARAMS.items()}


def available_splits(spec: str) -> list[str]:
    """Split names that ``open_split(spec, name)`` can open (for file datasets: those present on disk)."""
    kind, params = parse_spec(spec)
    cls = get_kind(kind)
    return list(cls.available_splits(**resolve_params(kind, params)))  # type: ignore[attr-defined]


def dataset_capabilities(spec: str) -> frozenset[str]:
    """What the dataset that ``spec`` names provides (``ImageSplit.capabilities``), without opening it."""
    kind, params = parse_spec(spec)
    return get_kind(kind).capabilities(**resolve_params(kind, params))  # type: ignore[attr-defined]


def kinds_with(capability: str) -> list[str]:
    """Registered dataset kinds that can provide ``capability`` (their ``CAPABILITIES``), sorted."""
    return [name for name in dataset_kinds() if capability in get_kind(name).CAPABILITIES]  # type: ignore[attr-defined]


def open_split(spec: str, split: str) -> ImageSplit:
    """Open split ``split`` of the dataset that ``spec`` names (see ``parse_spec``)."""
    kind, params = parse_spec(spec)
    cls = get_kind(kind)
    if split not in cls.SPLITS:  # type: ignore[attr-defined]
        raise ValueError(f"{kind}: unknown split {split!r}; valid splits: {', '.join(cls.SPLITS)}")  # type: ignore[attr-defined]
    return cls(spec=spec, split=split, **resolve_params(kind, params))
