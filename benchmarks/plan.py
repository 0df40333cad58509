"""The plan of a run: which encoders, which suites, each suite's dataset and options, and the settings
common to all, resolved from (in rising precedence) the defaults, a plan file and the command line.

A plan file (``--plan FILE.toml``) holds common settings at its top level and one table per suite::

    suites = ["cls", "seg"]              # optional; default all
    data = "shapes:n=2000:seed=0"        # default dataset of every suite
    encoders = "lineage.toml"            # optional; relative to the plan file
    seed = 0                             # any common setting (see --help)
    [cls]
    data = "imagenet:root=${imagenet_root}"
    linear = "lbfgs"
    [seg]
    data = "ade20k:root=${ade20k_root}"
    iters = 40000

``${name}`` in a string is a variable: ``--set name=VALUE``, else the environment variable ``name`` or
``NAME``; only the values a run uses must be set. A suite's dataset is, first found: ``--data
SUITE=SPEC``, the plan's ``[suite] data``, ``--data SPEC``, the plan's ``data``, the built-in default.
A run writes its resolved plan into ``config.json`` (key ``plan``, with the encoders), so
``--plan RUN/config.json`` runs it again exactly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from benchmarks.features import PRECISIONS
from benchmarks.loading import FEATURE_SOURCES
from benchmarks.results import package_version
from benchmarks.suites.spec import SuiteSpec, suite_specs
from common.errors import DataError, UsageError
from common.options import Option, add_flags, as_dict, build, given, hashed_part, option, options_of

DEFAULT_DATA = "shapes:n=2000:seed=0"
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
PLAN_KEY = "plan"  # where config.json keeps the resolved plan


def _default_cache() -> str:
    return str(os.environ.get("VEE_CACHE", Path.home() / ".cache" / "vision-encoder-eval" / "features"))


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class Inputs:
    """What to evaluate and with which plan (flags only; the resolved plan keeps their outcome)."""

    encoder: tuple[str, ...] = option((), "checkpoint file or HF / MLLM directory; repeatable (the first is the original, the rest its candidates)", repeat=True, metavar="PATH")
    encoders: str = option("", "lineage manifest (TOML) naming encoders, roles and bases", metavar="MANIFEST")
    arch: str = option("", "architecture for --encoder files that do not embed one, e.g. vit_base_patch16_siglip_224, open_clip:ViT-B-32")
    allow_partial: bool = option(False, "load checkpoints with missing/unexpected keys (recorded in every row)")
    allow_resample: bool = option(False, "let converters resample position/patch embeddings to the architecture's shape (recorded in every row); without it a shape change is an error")
    suite: tuple[str, ...] = option((), "all (the default), or a comma list of suites; repeatable (merged)", repeat=True, metavar="SUITES")
    data: tuple[str, ...] = option((), "dataset of every suite (SPEC, e.g. shapes:n=2000:seed=0, digits, imagenet:root=DIR, ade20k:root=DIR, coco:root=DIR, pairs:file=F, prefs:file=F) or of one suite (SUITE=SPEC, e.g. seg=ade20k:root=DIR); repeatable", repeat=True, metavar="[SUITE=]SPEC")
    plan: str = option("", "plan file: TOML with per-suite data and options, or a run's config.json to run it again; flags override it", metavar="FILE")
    variables: tuple[str, ...] = option((), "a plan variable ${NAME} (one the plan uses); repeatable", flag="--set", repeat=True, metavar="NAME=VALUE")


@dataclass(frozen=True)
class RunSettings:
    """Settings common to every suite (a plan file's top-level keys)."""

    device: str = option(default_factory=_default_device, help="torch device: cpu, cuda or cuda:N (its default is cuda when a GPU is visible)")
    precision: str = option("fp32", "fp32; bf16 (autocast) and bf16-weights on GPUs or AMX/AVX-512-BF16 CPUs; int8-dynamic, an opt-in for trained encoders on other CPUs (see benchmarks/perf/README.md); part of the cache key", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the feature call (same numbers, faster on large splits; about a minute to compile)", affects_numbers=False)
    seed: int = option(0, "seed of every probe and resampling", minimum=0, maximum=MAX_SEED)
    batch_size: int = option(64, "images per forward pass", minimum=1)
    workers: int = option(default_factory=_default_workers, help="DataLoader workers (0 = load images in the main process)", minimum=0, affects_numbers=False)
    features: str = option("encoder", "encoder: the vision tower; projector: an MLLM's encoder + projector outputs (--encoder an MLLM directory, or manifest entries with mllm = ...)", choices=FEATURE_SOURCES)
    decode: str = option("cpu", "cpu: PIL decode/resize/crop in the workers; gpu: workers read file bytes, torchvision decodes (nvJPEG on CUDA), resizes and crops on --device (datasets of image files; part of the cache key)", choices=("cpu", "gpu"))
    verify_data: bool = option(False, "add a content hash of every image file to the dataset fingerprint (the cache key); default: path, size, modification time", affects_numbers=False)
    out: str = option("", "run directory (default runs/<timestamp>)", affects_numbers=False, metavar="DIR")
    cache_dir: str = option(default_factory=_default_cache, help="feature store, shared across runs (env VEE_CACHE)", affects_numbers=False, metavar="DIR")
    note: str = option("", "free text shown in the report (e.g. demo-sized schedules)", affects_numbers=False)
    report: bool = option(True, "build report.html at the end", affects_numbers=False)


@dataclass
class SuitePlan:
    """One suite of the run: its spec, dataset, typed options, whether the user named it, and why it
    cannot run ('' when it can)."""

    spec: SuiteSpec
    data: str
    options: Any
    explicit: bool
    unmet: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Plan:
    """The resolved plan (see the module docstring)."""

    settings: RunSettings
    suites: list[SuitePlan]
    encoder_specs: list[Any]
    source: str = ""
    requested: list[str] = field(default_factory=lambda: ["all"])  # the suites as asked for ("all" or names)
    options: dict[str, Any] = field(default_factory=dict)  # every registered suite's options, checked whether or not it runs
    notices: list[str] = field(default_factory=list)  # values given for suites that do not run (one line each, on stderr)
    opened: dict[tuple[str, str], Any] = field(default_factory=dict)  # (data, split) -> the split opened before loading (or its DataError)

    def suite(self, name: str) -> SuitePlan | None:
        return next((item for item in self.suites if item.name == name), None)

    def options_of(self, name: str) -> Any:
        """The typed options of suite ``name``: as resolved (plan and flags) whether or not it runs, so a
        suite that ``uses`` another gets what was asked of that one."""
        found = self.suite(name)
        if found:
            return found.options
        return self.options[name] if name in self.options else _spec(name).options()

    def config_hash(self, name: str) -> str:
        """16 hex digits of everything that can change suite ``name``'s numbers: its dataset and options,
        those of the suites it ``uses``, the common settings that change numbers, the package version."""
        item = self.suite(name)
        spec = item.spec if item else _spec(name)
        relevant = {
            "suite": name, "data": item.data if item else "", "options": hashed_part(self.options_of(name), spec.flag_prefix),
            "uses": {other: hashed_part(self.options_of(other), _spec(other).flag_prefix) for other in spec.uses},
            "settings": hashed_part(self.settings), "version": package_version(),
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The plan as a plan document (``--plan`` reads it back): settings, suites, per-suite data and
        options, and the encoder specs."""
        document: dict[str, Any] = {key: value for key, value in as_dict(self.settings).items() if key != "out"}
        document["suites"] = list(self.requested)  # as asked: a suite reached through "all" may be skipped again
        for item in self.suites:
            document[item.name] = {"data": item.data, **as_dict(item.options)}
        document["encoder_specs"] = [spec.record() for spec in self.encoder_specs]
        return document


def _spec(name: str) -> SuiteSpec:
    from benchmarks.suites import SUITES

    return SUITES.get(name)


# ------------------------------------------------------------------ command line


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag of a run: inputs, common settings, and each registered suite's options."""
    add_flags(parser.add_argument_group("what to evaluate"), Inputs, "inputs")
    add_flags(parser.add_argument_group("common settings (a plan file's top-level keys)"), RunSettings, "settings")
    for spec in suite_specs():
        if options_of(spec.options):
            title = f"suite {spec.name}: {spec.summary}" if spec.summary else f"suite {spec.name}"
            add_flags(parser.add_argument_group(f"{title} (plan table [{spec.name}])"), spec.options, spec.name, spec.flag_prefix)


def all_options() -> list[Option]:
    """Every option of the command line (inputs, settings, suites), e.g. for the negative-value fix-up."""
    found = options_of(Inputs) + options_of(RunSettings)
    for spec in suite_specs():
        found += options_of(spec.options, spec.flag_prefix)
    return found


# ------------------------------------------------------------------ plan files

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class PlanFile:
    """A plan document and what its strings' ``${variables}`` resolve to."""

    path: str
    document: dict[str, Any]
    variables: dict[str, str]

    def expand(self, value: Any, where: str) -> Any:
        """``value`` with its variables replaced; UsageError naming the variable and how to set it."""
        if isinstance(value, list):
            return [self.expand(part, where) for part in value]
        if not isinstance(value, str):
            return value

        def replace(match: re.Match) -> str:
            name = match.group(1)
            found = self.value_of(name)
            if found is None:
                raise UsageError(f"{self.path}: {where} uses ${{{name}}}, which is not set; pass --set {name}=VALUE or export {name.upper()}=VALUE")
            return found

        return _VARIABLE.sub(replace, value)

    def value_of(self, name: str) -> str | None:
        """Variable ``name``: ``--set name=VALUE``, else the environment variable ``name`` or ``NAME``."""
        for found in (self.variables.get(name), os.environ.get(name), os.environ.get(name.upper())):
            if found is not None:
                return found
        return None

    def unset(self, value: Any) -> list[str]:
        """The variables ``value`` uses that are not set."""
        return [name for name in variable_names(value) if self.value_of(name) is None]


def variable_names(value: Any) -> set[str]:
    """Every ``${name}`` in ``value``'s strings (lists and tables walked)."""
    if isinstance(value, str):
        return set(_VARIABLE.findall(value))
    if isinstance(value, dict):
        return {name for part in value.values() for name in variable_names(part)}
    if isinstance(value, list):
        return {name for part in value for name in variable_names(part)}
    return set()


def check_variables(variables: dict[str, str], plan_file: PlanFile | None) -> None:
    """Every ``--set NAME=VALUE`` names a variable the plan uses (a misspelt one would be ignored);
    UsageError listing the plan's variables."""
    if not variables:
        return
    if plan_file is None:
        raise UsageError(f"--set {next(iter(variables))}: no --plan is given; --set NAME=VALUE fills a plan file's ${{NAME}}")
    used = variable_names(plan_file.document)
    unknown = [name for name in variables if name not in used]
    if unknown:
        raise UsageError(f"--set {unknown[0]}: --plan {plan_file.path} uses no ${{{unknown[0]}}}; its variables: {', '.join(sorted(used)) or 'none'}")


def parse_variables(items: tuple[str, ...]) -> dict[str, str]:
    """``("a=1", "b=x")`` -> ``{"a": "1", "b": "x"}``; UsageError on an item without '='."""
    variables = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not _VARIABLE.fullmatch("${" + name.strip() + "}"):
            raise UsageError(f"--set {item!r}: expected NAME=VALUE with NAME a plan variable such as imagenet_root")
        variables[name.strip()] = value
    return variables


def read_plan_file(path: str, variables: dict[str, str]) -> PlanFile:
    """A TOML plan, or the plan a run wrote into its config.json; UsageError naming the file and the fix."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--plan {path}: {'is a directory' if file.is_dir() else 'no such file'}; pass a plan .toml file or a run's config.json")
    try:
        if file.suffix == ".json":
            loaded = json.loads(file.read_text(encoding="utf-8"))
            document = loaded.get(PLAN_KEY) if isinstance(loaded, dict) else None
            if not isinstance(document, dict):
                raise UsageError(f"--plan {path}: this JSON file has no '{PLAN_KEY}' section; pass the config.json of a run written by this version of benchmarks.run, or a .toml plan")
        else:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"--plan {path}: not valid {'JSON' if file.suffix == '.json' else 'TOML'} ({err})") from None
    known = {item.name for item in fields(RunSettings)} | {"suites", "data", "encoders", "encoder_specs"} | {spec.name for spec in suite_specs()}
    unknown = sorted(set(document) - known)
    if unknown:
        raise UsageError(f"--plan {path}: unknown key(s) {', '.join(unknown)}; a plan holds common settings ({', '.join(f.name for f in fields(RunSettings))}), "
                         f"suites, data, encoders and one table per suite ({', '.join(spec.name for spec in suite_specs())})")
    for spec in suite_specs():
        if spec.name in document and not isinstance(document[spec.name], dict):
            raise UsageError(f"--plan {path}: '{spec.name}' must be a table ([{spec.name}]) of that suite's data and options")
    return PlanFile(str(path), document, variables)


# ------------------------------------------------------------------ resolution


def resolve(namespace: argparse.Namespace) -> tuple[Inputs, Plan, PlanFile | None]:
    """The run's inputs and plan from parsed flags (and the plan file they name), every value checked,
    those of the suites that do not run too (a value given for one is a ``notice``); encoder specs are
    filled in by the caller (they need the manifest). UsageError on the first bad value."""
    from benchmarks.validate import parse_suites

    inputs = build(Inputs, given(namespace, "inputs"), _flag)
    variables = parse_variables(inputs.variables)
    plan_file = read_plan_file(inputs.plan, variables) if inputs.plan else None
    check_variables(variables, plan_file)
    document = plan_file.document if plan_file else {}

    settings = _build_layered(RunSettings, {k: v for k, v in document.items() if k in {f.name for f in fields(RunSettings)}},
                              given(namespace, "settings"), plan_file, "", "")
    plan_suites = document.get("suites")
    if plan_suites is not None and not (isinstance(plan_suites, (list, str))):
        raise UsageError(f"--plan {plan_file.path}: suites must be a list of suite names or \"all\"")  # type: ignore[union-attr]
    requested = list(inputs.suite) or ([plan_suites] if isinstance(plan_suites, str) else plan_suites) or ["all"]
    specs = suite_specs()
    names = parse_suites(requested, [spec.name for spec in specs])
    explicit = {name.strip() for value in requested for name in str(value).split(",") if name.strip() and name.strip() != "all"}

    default_data, suite_data = _split_data(inputs.data, [spec.name for spec in specs])
    options = {spec.name: _suite_options(spec, document, namespace, plan_file, runs=spec.name in names) for spec in specs}
    suites = []
    for spec in (spec for name in names for spec in specs if spec.name == name):
        data = _suite_data(spec, document, suite_data, default_data, plan_file)
        suites.append(SuitePlan(spec, data, options[spec.name], spec.name in explicit))
    for spec in specs:  # a dataset given for a suite that does not run is checked too: a typo meant for a later run is not lost
        if spec.name not in names:
            _check_unused_data(spec, document.get(spec.name, {}), suite_data, plan_file)
    notices = unused_values(namespace, specs, names, suite_data)
    return inputs, Plan(settings, suites, [], plan_file.path if plan_file else "", [str(value) for value in requested], options, notices), plan_file


def _suite_options(spec: SuiteSpec, document: dict[str, Any], namespace: argparse.Namespace, plan_file: PlanFile | None, runs: bool) -> Any:
    """Suite ``spec``'s options from its plan table and its flags, checked whether or not it runs; the
    plan values of a suite that does not run may use variables that are not set (they are left out)."""
    plan_options = {k: v for k, v in document.get(spec.name, {}).items() if k != "data"}
    if not runs and plan_file is not None:
        plan_options = {k: v for k, v in plan_options.items() if not plan_file.unset(v)}
    return _build_layered(spec.options, plan_options, given(namespace, spec.name), plan_file, spec.name, spec.flag_prefix)


def _suite_data(spec: SuiteSpec, document: dict[str, Any], suite_data: dict[str, str], default_data: str | None, plan_file: PlanFile | None) -> str:
    """The dataset spec of a suite that runs, first found: --data SUITE=SPEC, the plan's [suite] data,
    --data SPEC, the plan's data, the built-in default."""
    table = document.get(spec.name, {})
    if spec.name in suite_data:
        data = suite_data[spec.name]
    elif "data" in table:
        data = plan_file.expand(table["data"], f"[{spec.name}] data")  # type: ignore[union-attr]
    elif default_data is not None:
        data = default_data
    elif document.get("data") is not None:
        data = plan_file.expand(document["data"], "data")  # type: ignore[union-attr]
    else:
        data = DEFAULT_DATA
    if not isinstance(data, str) or not data.strip():
        raise UsageError(f"suite {spec.name}: its dataset spec is empty; pass --data {spec.name}=SPEC")
    return data


def _check_unused_data(spec: SuiteSpec, table: dict[str, Any], suite_data: dict[str, str], plan_file: PlanFile | None) -> None:
    """The dataset spec given for a suite that does not run parses (kind, keys, values); its files are
    not opened. A plan's spec whose variables are not set is left alone."""
    from imagesets import parse_spec

    if spec.name in suite_data:
        data, where = suite_data[spec.name], f"--data {spec.name}="
    elif "data" in table and plan_file is not None and not plan_file.unset(table["data"]):
        data, where = plan_file.expand(table["data"], f"[{spec.name}] data"), f"--plan {plan_file.path} [{spec.name}] data = "
    else:
        return
    try:
        parse_spec(data)
    except ValueError as err:
        raise UsageError(f"{where}{data!r}: {str(err.args[0] if err.args else err).splitlines()[0]}") from None


def unused_values(namespace: argparse.Namespace, specs: list[SuiteSpec], names: list[str], suite_data: dict[str, str]) -> list[str]:
    """``--loc-items is set but loc does not run``: one line per flag given for a suite that does not run
    and that no running suite ``uses`` (loc fits its head with cls's options), and per ``--data SUITE=``
    given for a suite that does not run."""
    used = set(names) | {other for spec in specs if spec.name in names for other in spec.uses}
    notices = []
    for spec in (spec for spec in specs if spec.name not in names):
        if spec.name not in used:
            flags = {opt.name: opt.flag for opt in options_of(spec.options, spec.flag_prefix)}
            notices += [f"{flags[name]} is set but {spec.name} does not run" for name in given(namespace, spec.name)]
        if spec.name in suite_data:
            notices.append(f"--data {spec.name}=... is set but {spec.name} does not run")
    return notices


def _flag(opt: Option | None) -> str:
    return opt.flag if opt is not None else "command line"


def _build_layered(cls: type, from_plan: dict[str, Any], from_cli: dict[str, Any], plan_file: PlanFile | None, table: str, prefix: str) -> Any:
    """``cls`` from the plan's values overridden by the flags given; errors name the flag or the plan key."""
    where_table = f"[{table}] " if table else ""
    if plan_file is not None:
        from_plan = {key: plan_file.expand(value, f"{where_table}{key}") for key, value in from_plan.items()}
    values = {**from_plan, **from_cli}

    def where(opt: Option | None) -> str:
        if opt is None:
            return f"--plan {plan_file.path} {where_table}".strip() if plan_file else "command line"
        if opt.name in from_cli or plan_file is None:
            return opt.flag
        return f"--plan {plan_file.path} {where_table}{opt.name} ="

    return build(cls, values, where, prefix, written_out=set(from_plan) - set(from_cli))


def _split_data(values: tuple[str, ...], suite_names: list[str]) -> tuple[str | None, dict[str, str]]:
    """``--data`` values -> (the default spec or None, suite -> spec). ``SUITE=SPEC`` when the text before
    the first '=' holds no ':' (a dataset kind never contains '=')."""
    default: str | None = None
    per_suite: dict[str, str] = {}
    for value in values:
        if not value.strip():
            raise UsageError(f"--data {value!r}: empty; pass a dataset spec such as shapes:n=2000:seed=0, digits or imagenet:root=DIR")
        head, sep, rest = value.partition("=")
        if sep and ":" not in head:
            suite = head.strip()
            if suite not in suite_names:
                raise UsageError(f"--data {value!r}: {suite!r} is not a suite; write --data SPEC for every suite or --data SUITE=SPEC with SUITE one of {', '.join(suite_names)}")
            if suite in per_suite:
                raise UsageError(f"--data {suite}=...: given twice ({per_suite[suite]!r} and {rest!r}); keep one")
            per_suite[suite] = rest.strip()
        else:
            if default is not None:
                raise UsageError(f"--data {value!r}: a default dataset is already given ({default!r}); pass one --data SPEC, and --data SUITE=SPEC for per-suite datasets")
            default = value.strip()
    return default, per_suite


# ------------------------------------------------------------------ requirements


def check_requirements(plan: Plan) -> None:
    """Before any model loads: each suite's dataset spec parses and provides what the suite ``needs``
    (image files too under ``--decode gpu``), the encoders satisfy its ``encoder_check``, and every split
    it reads opens (files present and parseable, the record rules and thresholds: ``open_data``). A suite
    named explicitly that cannot run is a usage error (a DataError for its data files); under ``all`` it
    is marked (``unmet``) and writes skipped rows with the reason."""
    for item in plan.suites:
        reason = unmet_data_needs(item.spec, item.data) or _decode_problem(item.spec, item.data, plan.settings.decode)
        if not reason and item.spec.encoder_check is not None:
            reason = item.spec.encoder_check(item.options, plan.encoder_specs)
        if reason and item.explicit:
            raise UsageError(f"--suite {item.name}: {reason}")
        if not reason:
            try:
                open_data(plan, item)
            except DataError as err:
                if item.explicit:
                    raise DataError(f"suite {item.name}: {err.problem}", err.fix) from None
                reason = err.one_line()
        item.unmet = reason


def open_data(plan: Plan, item: SuitePlan) -> None:
    """Open every split suite ``item`` reads, once per (dataset, split) for the whole run: the run's
    suites reuse these splits (``RunContext.open_split``), so a file is read once, before any model
    loads. DataError naming the file, the record and the fix (kept, so a second suite on the same
    data gets it without a second read)."""
    from imagesets import open_split

    for split in item.spec.needs.splits:
        key = (item.data, split)
        if key not in plan.opened:
            try:
                plan.opened[key] = open_split(item.data, split)
            except DataError as err:
                plan.opened[key] = err
        if isinstance(plan.opened[key], DataError):
            raise plan.opened[key]


def _decode_problem(spec: SuiteSpec, data: str, decode: str) -> str:
    """'' unless ``--decode gpu`` is asked of a suite that decodes images from a dataset without image files."""
    from imagesets import IMAGE_FILES, dataset_capabilities

    if decode != "gpu" or spec.needs.none or not spec.needs.decoded or IMAGE_FILES in dataset_capabilities(data):
        return ""
    return f"--decode gpu reads image files, and dataset {data} has none (its images are generated or embedded); pass --decode cpu, or a dataset of image files with --data {spec.name}=SPEC"


def unmet_data_needs(spec: SuiteSpec, data: str) -> str:
    """'' when dataset ``data`` has every capability and split ``spec`` needs, else why not (naming
    what is missing, the dataset kinds that have it, and the flag that picks another dataset).
    UsageError when the spec itself is malformed, DataError when its root or table is missing."""
    from imagesets import CAPABILITIES, available_splits, dataset_capabilities, kinds_with

    if spec.needs.none:
        return ""
    try:
        capabilities = dataset_capabilities(data)
        splits = available_splits(data)
    except DataError as err:  # a missing root or table: its fix says what to lay out
        raise DataError(f"--data {data!r} (suite {spec.name}): {err.problem}", err.fix) from None
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError) as err:
        message = str(err.args[0]) if err.args else str(err)
        raise UsageError(f"--data {data!r} (suite {spec.name}): {message.splitlines()[0]}") from None
    missing = [name for name in spec.needs.all_of if name not in capabilities]
    if spec.needs.any_of and not capabilities.intersection(spec.needs.any_of):
        missing.append(spec.needs.any_of)
    if missing:
        def label(need) -> str:
            return " or ".join(CAPABILITIES[n] for n in need) if isinstance(need, tuple) else CAPABILITIES[need]

        def kinds(need) -> str:
            names = sorted({kind for n in (need if isinstance(need, tuple) else (need,)) for kind in kinds_with(n)})
            return ", ".join(names) or "none registered"

        wanted = "; ".join(f"{label(need)} (dataset kinds with them: {kinds(need)})" for need in missing)
        return f"suite {spec.name} needs {wanted}, and dataset {data} has none; pick one for this suite with --data {spec.name}=SPEC"
    absent = [name for name in spec.needs.splits if name not in splits]
    if absent:
        return f"suite {spec.name} reads the {'/'.join(spec.needs.splits)} splits, and dataset {data} has no {'/'.join(absent)} split (found {', '.join(splits) or 'none'}); add the missing split folder or pick another dataset with --data {spec.name}=SPEC"
    return ""
