"""Typed options: frozen dataclasses whose fields say everything about themselves.

A field made with :func:`option` carries its help text, its choices or bounds and, where the type
needs one, a check; from those fields come the command-line flags (argparse), the keys a plan file
may set, the conversion of a flag's text or a plan's TOML value into the field's type, and the
validation of every value before anything is loaded. Adding an option is adding one field.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``tuple[str, ...]`` and
``tuple[int, ...]`` (written on the command line as a comma list, in a plan as a list or a comma
string; a ``repeat`` option instead takes its flag several times, one value each).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Iterable

from common.errors import UsageError  # a bad flag or plan value: one line naming it, exit status 2

META_KEY = "vee_option"


@dataclass(frozen=True)
class OptionSpec:
    """What an option field declares beyond its type and default.

    ``check(value)`` returns '' or the problem (one phrase that says what to write instead).
    ``affects_numbers``: part of the config hash of the rows it can change (the output folder, worker
    count or a note are not). ``flag``: the full flag when it differs from the generated one.
    """

    help: str
    flag: str | None = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], str] | None = None
    metavar: str | None = None
    repeat: bool = False
    affects_numbers: bool = True


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    choices: Iterable[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    check: Callable[[Any], str] | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    affects_numbers: bool = True,
) -> Any:
    """A dataclass field that is an option (see :class:`OptionSpec`)."""
    if not help:
        raise ValueError("every option needs a help text")
    spec = OptionSpec(help=help, flag=flag, choices=tuple(choices) if choices is not None else None, minimum=minimum, maximum=maximum,
                      check=check, metavar=metavar, repeat=repeat, affects_numbers=affects_numbers)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={META_KEY: spec})
    return field(default=default, metadata={META_KEY: spec})


@dataclass(frozen=True)
class Option:
    """One option of a dataclass, resolved: its field name, Python type, default, flag and declaration."""

    name: str
    type: Any
    default: Any
    flag: str
    spec: OptionSpec

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.type) is tuple

    @property
    def item_type(self) -> type:
        return typing.get_args(self.type)[0] if self.is_list else self.type

    def describe(self) -> str:
        """The help text with its default, choices and bounds, as ``--help`` and the README show it."""
        extras = []
        if self.spec.choices is not None:
            extras.append("choices: " + ", ".join(str(choice) for choice in self.spec.choices))
        if self.spec.minimum is not None or self.spec.maximum is not None:
            low = f">= {_bound(self.spec.minimum)}" if self.spec.minimum is not None else ""
            high = f"<= {_bound(self.spec.maximum)}" if self.spec.maximum is not None else ""
            extras.append(" and ".join(part for part in (low, high) if part))
        shown = format_value(self.default)
        if shown != "":
            extras.append(f"default: {shown}")
        return f"{self.spec.help} ({'; '.join(extras)})" if extras else self.spec.help


def options_of(cls: type, prefix: str = "") -> list[Option]:
    """The options of dataclass ``cls`` in field order; flags are ``--{prefix}-{name}`` (underscores as
    dashes) unless a field names its own."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in fields(cls):
        spec = item.metadata.get(META_KEY)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{item.name} is not made with common.options.option(); every field of an options class must be")
        default = item.default if item.default is not MISSING else item.default_factory()  # type: ignore[misc]
        flag = spec.flag or "--" + "-".join(part for part in (prefix, item.name.replace("_", "-")) if part)
        kind = hints[item.name]
        if typing.get_origin(kind) is tuple and typing.get_args(kind)[-1] is not Ellipsis:
            raise TypeError(f"{cls.__name__}.{item.name}: use tuple[X, ...] for list options")
        found.append(Option(item.name, kind, default, flag, spec))
    return found


def _bound(value: float) -> str:
    """A bound as written: integers in full (a seed's 9223372036854775807), other numbers as ``%g``."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def format_value(value: Any) -> str:
    """A value as it is written on the command line (lists as comma lists)."""
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ------------------------------------------------------------------ conversion and validation


def _convert_scalar(kind: type, raw: Any) -> Any:
    """``raw`` (command-line text or a plan's TOML value) as ``kind``; ValueError saying what was expected."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        lowered = str(raw).strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if kind is int:
        if isinstance(raw, bool) or isinstance(raw, float):
            raise ValueError("expected an integer")
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        try:
            value = float(str(raw).strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw
    raise TypeError(f"unsupported option type {kind!r}")


def convert(opt: Option, raw: Any) -> Any:
    """The value of ``opt`` from ``raw``: a flag's text (a list of texts for repeated flags) or a plan value."""
    if not opt.is_list:
        return _convert_scalar(opt.type, raw)
    if isinstance(raw, (list, tuple)):
        parts = list(raw)
    elif isinstance(raw, str):
        parts = [raw] if opt.spec.repeat else raw.split(",")
    else:
        raise ValueError("expected a list or a comma-separated string")
    items = []
    for part in parts:
        if isinstance(part, str) and not opt.spec.repeat:  # "a, b," is a, b; a repeated flag keeps what it was given
            part = part.strip()
            if not part:
                continue
        elif isinstance(part, str) and not part.strip():
            raise ValueError("an empty value; give one, or leave the flag out")
        items.append(_convert_scalar(opt.item_type, part))
    return tuple(items)


def empty_problem(opt: Option) -> str:
    """Why a list option given as an empty list is refused (it would run nothing, silently)."""
    what = f"one of {', '.join(map(str, opt.spec.choices))}" if opt.spec.choices else "one value"
    default = format_value(opt.default)
    return f"an empty list; give at least {what}, or leave it out for the default" + (f" ({default})" if default else "")


def problem(opt: Option, value: Any) -> str:
    """'' when ``value`` satisfies the option's choices, bounds and check; else what is wrong."""
    values = value if opt.is_list else (value,)
    if opt.spec.choices is not None:
        bad = [v for v in values if v not in opt.spec.choices]
        if bad:
            return f"{'unknown ' + ', '.join(map(str, bad)) if opt.is_list else 'not one of the choices'}; choose from {', '.join(map(str, opt.spec.choices))}"
    for v in values:
        if opt.spec.minimum is not None and v < opt.spec.minimum:
            return f"must be >= {_bound(opt.spec.minimum)}"
        if opt.spec.maximum is not None and v > opt.spec.maximum:
            return f"must be <= {_bound(opt.spec.maximum)}"
    return opt.spec.check(value) if opt.spec.check else ""


def build(cls: type, values: dict[str, Any], where: Callable[[Option], str], prefix: str = "", written_out: Iterable[str] = ()) -> Any:
    """An instance of ``cls`` from ``values`` (field name -> raw value; absent fields take their
    defaults), every value converted and checked; UsageError naming ``where(option)`` on the first bad
    one (e.g. the flag, or the plan file and key). A list given empty is refused (it would run nothing,
    or silently the default), except for the fields ``written_out`` (a plan's values: a run's
    config.json writes every default) whose default is empty too."""
    written_out = set(written_out)
    by_name = {opt.name: opt for opt in options_of(cls, prefix)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise UsageError(f"{where(None)}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(by_name) or 'none'}")  # type: ignore[arg-type]
    resolved = {}
    for name, opt in by_name.items():
        if name in values:
            raw = values[name]
            shown = ",".join(map(str, raw)) if isinstance(raw, list) else format_value(raw)
            try:
                value = convert(opt, raw)
            except ValueError as err:
                raise UsageError(f"{where(opt)} {shown!r}: {err}") from None
            if opt.is_list and not value and not (name in written_out and not opt.default):
                raise UsageError(f"{where(opt)} {shown!r}: {empty_problem(opt)}")
        else:
            value = opt.default
        trouble = problem(opt, value)
        if trouble:
            raise UsageError(f"{where(opt)} {format_value(value)!r}: {trouble}")
        resolved[name] = value
    return cls(**resolved)


def as_dict(instance: Any) -> dict[str, Any]:
    """Field name -> value (lists as lists), e.g. for config.json and plan files."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(instance).items()}


def hashed_part(instance: Any, prefix: str = "") -> dict[str, Any]:
    """The fields of ``instance`` that can change a number (``affects_numbers``)."""
    return {opt.name: format_value(getattr(instance, opt.name)) for opt in options_of(type(instance), prefix) if opt.spec.affects_numbers}


# ------------------------------------------------------------------ command line


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, scope: str, prefix: str = "") -> None:
    """One flag per option of ``cls``; parsed values land in the namespace as ``{scope}.{field}`` only
    when given (default SUPPRESS), so a plan file's value is overridden only by a flag actually passed."""
    for opt in options_of(cls, prefix):
        kwargs: dict[str, Any] = {"dest": f"{scope}.{opt.name}", "default": argparse.SUPPRESS, "help": opt.describe().replace("%", "%%")}
        if opt.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if opt.default else "store_true"
        else:
            kwargs["metavar"] = opt.spec.metavar or (opt.flag.lstrip("-").upper().replace("-", "_") if not opt.spec.choices else None)
            if opt.spec.repeat:
                kwargs["action"] = "append"
            if opt.spec.choices and not opt.is_list:
                kwargs["metavar"] = "{" + ",".join(map(str, opt.spec.choices)) + "}"
        parser.add_argument(opt.flag, **kwargs)


def given(namespace: argparse.Namespace, scope: str) -> dict[str, Any]:
    """Field name -> raw value of the flags of ``scope`` that were passed."""
    start = f"{scope}."
    return {key[len(start):]: value for key, value in vars(namespace).items() if key.startswith(start)}


_NEGATIVE_LIST = re.compile(r"^-\d+(,\s*-?\d+)*,?$")


def _is_negative_list(value: str) -> bool:
    return bool(_NEGATIVE_LIST.match(value))


def join_negative_values(argv: Iterable[str], flags: Iterable[str], looks_negative: Callable[[str], bool] = _is_negative_list) -> list[str]:
    """``["--layers", "-1,-2"]`` -> ``["--layers=-1,-2"]`` for ``flags`` whose next item ``looks_negative``
    (by default a list of integers), so argparse does not read a negative value as an option."""
    flags = set(flags)
    out: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        if item in flags and index + 1 < len(items) and looks_negative(items[index + 1]):
            out.append(f"{item}={items[index + 1]}")
            index += 2
            continue
        out.append(item)
        index += 1
    return out


def negative_list_flags(options: Iterable[Option]) -> list[str]:
    """Flags whose values may start with '-': integer lists and block-list strings (``takes_negatives``)."""
    return [opt.flag for opt in options if (opt.is_list and opt.item_type is int) or (opt.spec.metavar or "").startswith("BLOCKS")]
