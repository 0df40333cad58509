"""Read run directories into what a report shows: rows, configs, encoders and lineages.

A *lineage* is one original encoder and the checkpoints trained from it (rows whose ``base`` names
it). Encoders inside a lineage are ordered by role: original, sft, pivot, then any other role in the
order first seen. Rows are identified by ``ResultRow.identity`` (suite, task, dataset, metric, variant),
the identity the regression gate uses too, so per-layer rows of one metric never collide.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import CONFIG_FILE, RESULTS_FILE, STATUS_OK, ResultRow, read_rows

ROLE_ORDER = ("original", "sft", "pivot")
# "dpo" is the training objective behind PIVOT; sort it where pivot goes.
ROLE_ALIASES = {"dpo": "pivot", "orig": "original", "base": "original"}


def role_rank(role: str) -> int:
    """Sort rank of a role: original 0, sft 1, pivot 2, anything else 3."""
    canonical = ROLE_ALIASES.get(role.strip().lower(), role.strip().lower())
    return ROLE_ORDER.index(canonical) if canonical in ROLE_ORDER else len(ROLE_ORDER)


def row_layer(row: ResultRow) -> Any:
    """``extra["layer"]`` or None."""
    layer = row.extra.get("layer")
    return None if layer in (None, "") else layer


def is_ok(row: ResultRow) -> bool:
    return row.status == STATUS_OK and row.value is not None


@dataclass
class RunData:
    """One run directory: its rows (each tagged with the run) and its ``config.json`` (``{}`` when absent)."""

    path: Path
    label: str
    rows: list[ResultRow]
    config: dict[str, Any]
    config_error: str = ""


@dataclass
class LoadedRow:
    """A result row plus the run it came from."""

    row: ResultRow
    run: RunData

    def resolve(self, relative: str) -> Path | None:
        """A path from the row (per_item, figure) inside its run directory; None if it escapes the run dir."""
        root = self.run.path.resolve()
        target = (root / relative).resolve()
        return target if target.is_relative_to(root) else None


@dataclass
class EncoderInfo:
    """What the rows and configs say about one encoder."""

    name: str
    role: str = ""
    base: str = ""
    weights_hashes: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    replicate: int | None = None  # training-seed replicate of its arm (rows' extra["replicate"], or the manifest's)

    @property
    def lineage(self) -> str:
        return self.base or self.name


@dataclass
class Arm:
    """One recipe of a lineage: its training-seed replicates (encoders with the same role and base and a
    ``replicate`` index), or a single encoder. ``fixed``: the original, a given checkpoint rather than a
    recipe's draw (it has no seed variance)."""

    label: str
    members: list[EncoderInfo]
    fixed: bool = False

    @property
    def k(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.members]


def arm_label(info: EncoderInfo, lineage_name: str) -> str:
    """original, +SFT, +PIVOT or +<role> (+<name> without a role)."""
    if info.name == lineage_name:
        return "original"
    return {1: "+SFT", 2: "+PIVOT"}.get(role_rank(info.role), f"+{info.role or info.name}")


@dataclass
class Lineage:
    """An original encoder (possibly absent from the runs) and its descendants, in role order."""

    name: str
    encoders: list[EncoderInfo]
    rows: list[LoadedRow]

    @property
    def original(self) -> EncoderInfo | None:
        for info in self.encoders:
            if info.name == self.name:
                return info
        return None

    def arms(self) -> list[Arm]:
        """The lineage's arms in encoder order: replicates (``replicate`` set) of one role and base form one
        arm, in replicate order; every other encoder is an arm of its own."""
        arms: list[Arm] = []
        by_key: dict[tuple[str, str], Arm] = {}
        for info in self.encoders:
            if info.replicate is None or info.name == self.name:
                arms.append(Arm(arm_label(info, self.name), [info], fixed=info.name == self.name))
                continue
            key = (info.role, info.base)
            if key not in by_key:
                by_key[key] = Arm(arm_label(info, self.name), [])
                arms.append(by_key[key])
            by_key[key].members.append(info)
        for arm in arms:
            arm.members.sort(key=lambda info: info.replicate if info.replicate is not None else -1)
        return arms

    @property
    def replicated(self) -> bool:
        """Some arm holds more than one training-seed replicate."""
        return any(arm.k > 1 for arm in self.arms())


@dataclass
class ReportData:
    runs: list[RunData]
    rows: list[LoadedRow]
    encoders: list[EncoderInfo]
    lineages: list[Lineage]
    duplicates: list[str]
    renamed: list[str] = field(default_factory=list)  # encoder names that stood for different weights, and what they became

    def headlines(self, key: str = "headline") -> dict[str, list]:
        """suite -> its headline metrics [(task, metric[, preferred variant]), ...] as the runs' config.json
        declare them (``suites.<name>.headline``, or ``control_headline`` for the lines positive controls are
        judged on; the first run that declares a suite wins)."""
        found: dict[str, list] = {}
        for run in self.runs:
            suites = run.config.get("suites")
            if isinstance(suites, dict):
                for name, entry in suites.items():
                    if isinstance(entry, dict) and isinstance(entry.get(key), list) and entry[key]:
                        found.setdefault(name, [tuple(item) for item in entry[key] if isinstance(item, list) and len(item) >= 2])
        return found


def _append_unique(values: list[str], value: str) -> None:
    if value and value not in values:
        values.append(value)


def _non_finite_as_failed(row: ResultRow, path: Path) -> ResultRow:
    """An ok row whose value or CI is NaN/Inf is shown as failed with the reason, never compared or coloured."""
    bad = [name for name in ("value", "ci_low", "ci_high") if getattr(row, name) is not None and not math.isfinite(getattr(row, name))]
    if row.status != STATUS_OK or not bad:
        return row
    return dataclasses.replace(row, value=None, ci_low=None, ci_high=None, status="failed",
                               reason=f"{path / RESULTS_FILE}: {', '.join(f'{name} = {getattr(row, name)!r}' for name in bad)} is not a finite number")


def load_run(path: Path, label: str | None = None) -> RunData:
    """Read one run directory; a missing ``results.jsonl`` is an error naming the directory."""
    path = Path(path)
    if not (path / RESULTS_FILE).is_file():
        raise FileNotFoundError(
            f"{path}: no {RESULTS_FILE} here; pass a run directory written by `python -m benchmarks.run --out DIR`"
        )
    rows = [_non_finite_as_failed(row, path) for row in read_rows(path)]
    if not rows:
        raise ValueError(
            f"{path / RESULTS_FILE}: the run has no result rows (the file is empty); pass a run directory in which "
            f"`python -m benchmarks.run --out DIR` finished at least one suite, or rerun it"
        )
    config: dict[str, Any] = {}
    config_error = ""
    config_path = path / CONFIG_FILE
    if config_path.is_file():
        try:
            loaded = json.loads(config_path.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {"config": loaded}
        except (OSError, json.JSONDecodeError) as err:
            config_error = f"{config_path}: unreadable ({err})"
    return RunData(path=path, label=label or str(path), rows=rows, config=config, config_error=config_error)


def _config_encoders(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = config.get("encoders")
    found: dict[str, dict[str, Any]] = {}
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and entry.get("name"):
                found[str(entry["name"])] = entry
    return found


def load_runs(run_dirs: list[Path]) -> ReportData:
    """Load and concatenate run directories, collect encoders and group them into lineages.

    When the same encoder reports the same row identity in several runs, the later run wins and the
    collision is listed in ``duplicates``.
    """
    if not run_dirs:
        raise ValueError("no run directories given")
    labels = _labels(run_dirs)
    runs = [load_run(Path(path), label) for path, label in zip(run_dirs, labels)]
    renamed = _keep_weights_apart(runs)

    latest: dict[tuple[str, tuple], LoadedRow] = {}
    duplicates: list[str] = []
    for run in runs:
        for row in run.rows:
            item = LoadedRow(row, run)
            ident = (row.encoder, row.identity)
            if ident in latest:
                previous = latest[ident]
                duplicates.append(
                    f"{row.encoder} {'/'.join(part for part in ident[1] if part)}: "
                    f"kept {run.label}, dropped {previous.run.label}"
                )
                del latest[ident]
            latest[ident] = item
    ordered = list(latest.values())

    encoders: dict[str, EncoderInfo] = {}
    for item in ordered:
        row = item.row
        info = encoders.setdefault(row.encoder, EncoderInfo(name=row.encoder))
        info.role = info.role or row.role
        info.base = info.base or (row.base if row.base != row.encoder else "")
        _append_unique(info.weights_hashes, row.weights_hash)
        _append_unique(info.checkpoints, row.checkpoint)
        _append_unique(info.runs, item.run.label)
        _append_unique(info.versions, row.version)
        if isinstance(row.extra.get("replicate"), int):
            info.replicate = row.extra["replicate"]
    for run in runs:
        for name, entry in _config_encoders(run.config).items():
            if name in encoders:
                encoders[name].config.update(entry)
                if encoders[name].replicate is None and isinstance(entry.get("replicate"), int):
                    encoders[name].replicate = entry["replicate"]

    order = list(encoders)
    by_lineage: dict[str, list[EncoderInfo]] = {}
    for info in encoders.values():
        by_lineage.setdefault(info.lineage, []).append(info)
    lineages = []
    for name, members in by_lineage.items():
        members.sort(key=lambda info: (info.name != name, role_rank(info.role), order.index(info.name)))
        names = {info.name for info in members}
        lineages.append(Lineage(name, members, [item for item in ordered if item.row.encoder in names]))
    return ReportData(runs, ordered, list(encoders.values()), lineages, duplicates, renamed)


def _rename_in_run(run: RunData, split: dict[str, dict[str, str]]) -> None:
    """Apply :func:`_keep_weights_apart`'s renaming (``split``: name -> weights hash -> short hash) to one run."""
    in_run: dict[str, list[str]] = {}
    for row in run.rows:
        if row.encoder in split and row.weights_hash:
            _append_unique(in_run.setdefault(row.encoder, []), row.weights_hash)

    def renamed(name: str, weights_hash: str, what: str) -> str:
        if name not in split:
            return name
        candidates = [weights_hash] if weights_hash else in_run.get(name, [])
        if len(candidates) != 1:
            raise ValueError(
                f"{run.path / RESULTS_FILE}: encoder name {name!r} stands for {len(split[name])} different weights across the runs, "
                f"and {what} cannot be told apart ({'the run holds rows of several of them' if candidates else 'no weights hash in this run'}); "
                "give the encoders distinct names (the manifest's name = ..., or --encoder NAME=PATH) and rerun, or build one report per set of weights"
            )
        return f"{name}@{split[name][candidates[0]]}"

    run.rows = [dataclasses.replace(row, encoder=renamed(row.encoder, row.weights_hash, f"a row of {row.encoder!r} without a weights hash"),
                                    base=renamed(row.base, "", f"the base {row.base!r} of {row.encoder!r}") if row.base and row.base != row.encoder else row.base)
                for row in run.rows]
    entries = run.config.get("encoders")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        name, base = entry.get("name"), entry.get("base")
        if name in split:
            weights = str(entry.get("weights_hash") or "")
            known = weights if weights in split[name] else (in_run[name][0] if len(in_run.get(name, [])) == 1 else "")
            if known:
                entry["name"] = f"{name}@{split[name][known]}"
        if isinstance(base, str) and base in split and len(in_run.get(base, [])) == 1:
            entry["base"] = f"{base}@{split[base][in_run[base][0]]}"


def _short_hashes(hashes: list[str]) -> dict[str, str]:
    """Each weights hash -> its shortest prefix (6 characters or more, a ``sha256-`` tag dropped) that no other shares."""
    bare = {value: value.split("sha256-", 1)[-1].split("sha256:", 1)[-1] for value in hashes}
    for length in range(6, max(len(text) for text in bare.values()) + 1):
        short = {value: text[:length] for value, text in bare.items()}
        if len(set(short.values())) == len(short):
            return short
    return bare


def _keep_weights_apart(runs: list[RunData]) -> list[str]:
    """Rename, in place, every encoder name whose rows carry different weights hashes to ``name@<short hash>``
    (its rows, the ``base`` of its descendants and its config.json entries), so distinct weights are never
    merged into one column. Returns one note per renamed name. Rows that cannot be attributed to one of
    the weights (no hash, with the run holding several or none for that name) are a ValueError with the fix."""
    hashes: dict[str, list[str]] = {}
    for run in runs:
        for row in run.rows:
            if row.weights_hash:
                _append_unique(hashes.setdefault(row.encoder, []), row.weights_hash)
    split = {name: _short_hashes(values) for name, values in hashes.items() if len(values) > 1}
    if not split:
        return []
    for run in runs:
        _rename_in_run(run, split)
    return [
        f"encoder name {name!r} stands for {len(short)} different weights (weights hashes {', '.join(short)}); "
        f"they are kept apart as {', '.join(f'{name}@{value}' for value in short.values())}"
        for name, short in split.items()
    ]


def _labels(run_dirs: list[Path]) -> list[str]:
    """Short unique labels for run directories (their paths as given)."""
    labels = [str(path) for path in run_dirs]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} (#{seen[label]})")
    return unique


class PerItemCache:
    """Loads per-item score vectors once; failures are remembered as messages, not raised."""

    def __init__(self) -> None:
        self._cache: dict[Path, np.ndarray | str] = {}

    def get(self, item: LoadedRow) -> np.ndarray | str:
        """The 1-D float vector of the row's per-item scores, or a string saying why there is none."""
        if not item.row.per_item:
            return "no per-item scores"
        path = item.resolve(item.row.per_item)
        if path is None:
            return f"per-item path {item.row.per_item!r} points outside the run directory"
        if path not in self._cache:
            try:
                array = np.load(path, allow_pickle=False)
                array = np.asarray(array, dtype=np.float64).reshape(-1)
                self._cache[path] = array if array.size and np.isfinite(array).all() else f"{path.name}: empty or non-finite"
            except (OSError, ValueError) as err:
                self._cache[path] = f"{path}: unreadable ({err})"
        return self._cache[path]
