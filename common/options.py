"""Typed options: frozen dataclasses whose fields say everything about themselves.

A field made with :func:`option` carries its help text, its choices or bounds and, where the type
needs one, a check; from those fields come the command-line flags (argparse), the keys a plan file
may set, the conversion of a flag's text or a plan's TOML value into the field's type, and the
validation of every value before anything is loaded. Adding an option is adding one field. The
suites of ``benchmarks`` (``benchmarks.plan``) and the commands of ``python -m train`` (``train.commands``,
``train.config.StageConfig``) both declare their settings so.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``tuple[str, ...]`` and
``tuple[int, ...]`` (written on the command line as a comma list, in a plan as a list or a comma
string; a ``repeat`` option instead takes its flag several times, one value each), and ``X | None``
of a scalar ``X`` (``None``: unset). A field without a default is required; a dataclass built in
Python can check its own fields with :func:`field_problem`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping

from common.errors import UsageError  # a bad flag or plan value: one line naming it, exit status 2

META_KEY = "vee_option"


@dataclass(frozen=True)
class OptionSpec:
    """What an option field declares beyond its type and default.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones; ``why`` says what a
    value outside them would do (it is part of the refusal). ``check(value)`` returns '' or the problem
    (one phrase that says what to write instead). ``affects_numbers``: part of the config hash of the
    rows it can change (the output folder, worker count or a note are not). ``flag``: the full flag
    when it differs from the generated one. ``positional``: a command-line argument without a flag.
    """

    help: str
    flag: str | None = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    why: str = ""
    check: Callable[[Any], str] | None = None
    metavar: str | None = None
    repeat: bool = False
    positional: bool = False
    affects_numbers: bool = True

    def range_text(self) -> str:
        """The bounds in words: ``>= 0 and < 1``; '' when there are none."""
        parts = [f"{sign} {_bound(value)}" for sign, value in ((">=", self.minimum), (">", self.above), ("<=", self.maximum), ("<", self.below)) if value is not None]
        return " and ".join(parts)

    def out_of_range(self, value: Any) -> bool:
        return ((self.minimum is not None and value < self.minimum) or (self.above is not None and value <= self.above)
                or (self.maximum is not None and value > self.maximum) or (self.below is not None and value >= self.below))


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    choices: Iterable[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    why: str = "",
    check: Callable[[Any], str] | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    positional: bool = False,
    affects_numbers: bool = True,
) -> Any:
    """A dataclass field that is an option (see :class:`OptionSpec`); without a default it is required."""
    if not help:
        raise ValueError("every option needs a help text")
    spec = OptionSpec(help=help, flag=flag, choices=tuple(choices) if choices is not None else None, minimum=minimum, maximum=maximum,
                      above=above, below=below, why=why, check=check, metavar=metavar, repeat=repeat, positional=positional,
                      affects_numbers=affects_numbers)
    return _field(default, default_factory, spec)


def _field(default: Any, default_factory: Any, spec: OptionSpec) -> Any:
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={META_KEY: spec})
    return field(default=default, metadata={META_KEY: spec})


def option_like(cls: type, name: str, default: Any = MISSING, help: str = "", **changes: Any) -> Any:
    """A field declared as option ``name`` of ``cls`` (its bounds, choices, check and why) with its own
    ``default`` and ``help`` and any other :class:`OptionSpec` field in ``changes`` (e.g. ``flag``): one
    setting offered under another name, never a second copy of its rules."""
    spec = next(item.metadata[META_KEY] for item in fields(cls) if item.name == name)
    return _field(default, MISSING, dataclasses.replace(spec, help=help or spec.help, **changes))


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
    def optional(self) -> bool:
        """``None`` is a value (the field's type is ``X | None``)."""
        return type(None) in typing.get_args(self.type) and not self.is_list

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def item_type(self) -> type:
        """The type of one value: ``int`` for ``tuple[int, ...]`` and for ``int | None``."""
        if self.is_list:
            return typing.get_args(self.type)[0]
        if self.optional:
            return next(kind for kind in typing.get_args(self.type) if kind is not type(None))
        return self.type

    def describe(self, default: str | None = None) -> str:
        """The help text with its choices, bounds and default (``default``: the default as shown, when it
        is not the field's own), as ``--help`` and the README show it."""
        extras = []
        if self.spec.choices is not None:
            extras.append("choices: " + ", ".join(str(choice) for choice in self.spec.choices))
        if self.spec.range_text():
            extras.append(self.spec.range_text())
        shown = default if default is not None else ("" if self.required or self.default is None else format_value(self.default))
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
        default = item.default_factory() if item.default_factory is not MISSING else item.default  # MISSING: required
        if spec.positional:
            flag = spec.metavar or item.name.upper()
        else:
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
    if raw is None and opt.optional:
        return None
    if not opt.is_list:
        return _convert_scalar(opt.item_type, raw)
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
    if value is None and opt.optional:
        return ""
    values = value if opt.is_list else (value,)
    if opt.spec.choices is not None:
        bad = [v for v in values if v not in opt.spec.choices]
        if bad:
            return f"{'unknown ' + ', '.join(map(str, bad)) if opt.is_list else 'not one of the choices'}; choose from {', '.join(map(str, opt.spec.choices))}"
    if any(opt.spec.out_of_range(v) for v in values):
        return f"must be {opt.spec.range_text()}" + (f" ({opt.spec.why})" if opt.spec.why else "")
    return opt.spec.check(value) if opt.spec.check else ""


def type_problem(opt: Option, value: Any) -> str:
    """'' when ``value`` is of the option's type as Python holds it (a float option takes an int; a
    float must be finite; ``None`` only where the type allows it); else what was expected."""
    if value is None:
        return "" if opt.optional else f"expected {_TYPE_WORDS[opt.item_type]}, not None"
    if opt.is_list:
        if not isinstance(value, tuple):
            return "expected a tuple"
        return next((found for found in (_scalar_type_problem(opt.item_type, item) for item in value) if found), "")
    return _scalar_type_problem(opt.item_type, value)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _scalar_type_problem(kind: type, value: Any) -> str:
    if kind is bool:
        fits = isinstance(value, bool)
    elif kind is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        fits = isinstance(value, kind)
    return "" if fits else f"expected {_TYPE_WORDS[kind]}"


def field_problem(instance: Any, prefix: str = "") -> tuple[Option, str] | None:
    """The first option of dataclass ``instance`` whose value is of the wrong type or breaks its rules,
    with the problem; ``None`` when every field is fine. For an instance made in Python (a library
    caller), which :func:`build` did not convert and check."""
    for opt in options_of(type(instance), prefix):
        value = getattr(instance, opt.name)
        found = type_problem(opt, value) or problem(opt, value)
        if found:
            return opt, found
    return None


def build(cls: type, values: dict[str, Any], where: Callable[[Option | None], str], prefix: str = "", written_out: Iterable[str] = ()) -> Any:
    """An instance of ``cls`` from ``values`` (field name -> raw value; absent fields take their
    defaults), every value converted and checked (:func:`given_values`); a default is checked too."""
    resolved = given_values(cls, values, where, prefix, written_out)
    for opt in options_of(cls, prefix):
        if opt.name not in resolved:
            if opt.required:
                raise UsageError(f"{where(opt)}: required; give it")
            trouble = problem(opt, opt.default)
            if trouble:
                raise UsageError(f"{where(opt)} {format_value(opt.default)!r}: {trouble}")
    return cls(**resolved)


def given_values(cls: type, values: dict[str, Any], where: Callable[[Option | None], str], prefix: str = "", written_out: Iterable[str] = ()) -> dict[str, Any]:
    """Field name -> value of the options of ``cls`` that ``values`` gives (field name -> raw value),
    each converted and checked; UsageError naming ``where(option)`` on the first bad one (e.g. the flag,
    or the plan file and key), ``where(None)`` for an unknown name. A list given empty is refused (it
    would run nothing, or silently the default), except for the fields ``written_out`` (a plan's
    values: a run's config.json writes every default) whose default is empty too."""
    written_out = set(written_out)
    by_name = {opt.name: opt for opt in options_of(cls, prefix)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise UsageError(f"{where(None)}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(by_name) or 'none'}")
    resolved = {}
    for name, opt in by_name.items():
        if name not in values:
            continue
        raw = values[name]
        shown = ",".join(map(str, raw)) if isinstance(raw, list) else format_value(raw)
        try:
            value = convert(opt, raw)
        except ValueError as err:
            raise UsageError(f"{where(opt)} {shown!r}: {err}") from None
        if opt.is_list and not value and not (name in written_out and not opt.default):
            raise UsageError(f"{where(opt)} {shown!r}: {empty_problem(opt)}")
        trouble = problem(opt, value)
        if trouble:
            raise UsageError(f"{where(opt)} {format_value(value)!r}: {trouble}")
        resolved[name] = value
    return resolved


def as_dict(instance: Any) -> dict[str, Any]:
    """Field name -> value (lists as lists), e.g. for config.json and plan files."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(instance).items()}


def hashed_part(instance: Any, prefix: str = "") -> dict[str, Any]:
    """The fields of ``instance`` that can change a number (``affects_numbers``)."""
    return {opt.name: format_value(getattr(instance, opt.name)) for opt in options_of(type(instance), prefix) if opt.spec.affects_numbers}


# ------------------------------------------------------------------ command line


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, scope: str, prefix: str = "",
              defaults: Mapping[str, str] | None = None) -> None:
    """One flag per option of ``cls`` (a positional argument for a ``positional`` one); parsed values land
    in the namespace as ``{scope}.{field}`` only when given (default SUPPRESS), so a plan file's value is
    overridden only by a flag actually passed. ``defaults``: field -> the default as ``--help`` shows it,
    for fields whose default comes from elsewhere (a field without a default and not named there is a
    required flag)."""
    defaults = defaults or {}
    for opt in options_of(cls, prefix):
        text = opt.describe(defaults.get(opt.name)).replace("%", "%%")
        if opt.spec.positional:
            if not opt.required:
                raise TypeError(f"{cls.__name__}.{opt.name}: a positional option has no default")
            parser.add_argument(f"{scope}.{opt.name}", metavar=opt.flag, help=text)
            continue
        kwargs: dict[str, Any] = {"dest": f"{scope}.{opt.name}", "default": argparse.SUPPRESS, "help": text}
        if opt.required and opt.name not in defaults:
            kwargs["required"] = True
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


def looks_negative(value: str) -> bool:
    """``value`` is a negative number (``-1e-5``, ``-inf``) or a comma list of integers starting with one."""
    if not value.startswith("-"):
        return False
    if _NEGATIVE_LIST.match(value):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def join_negative_values(argv: Iterable[str], flags: Iterable[str]) -> list[str]:
    """``["--layers", "-1,-2"]`` -> ``["--layers=-1,-2"]`` for ``flags`` whose next item
    :func:`looks_negative`, so argparse does not read a negative value as an option (it takes ``-1``
    as a value, but ``-1,-2`` and ``-1e-5`` as unknown flags)."""
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


def negative_value_flags(options: Iterable[Option]) -> list[str]:
    """Flags whose values may start with '-': numbers, lists of them, and strings of block indices (the
    options whose ``metavar`` is ``BLOCKS``, such as ``--layers -1,-2``)."""
    return [opt.flag for opt in options if not opt.spec.positional and (opt.item_type in (int, float) or (opt.spec.metavar or "").startswith("BLOCKS"))]
