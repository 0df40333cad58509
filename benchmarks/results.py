"""Result rows: one metric value with everything needed to trust it.

A run directory holds ``results.jsonl`` (one JSON object per line, append-only), ``results.csv``
(the same rows, flat), ``config.json`` (the resolved run config) and optionally ``per_item/*.npy``
(per-item scores, e.g. 0/1 correctness, in the dataset's item order, so two encoders evaluated on
the same items can be compared with a paired bootstrap).

Reports and the regression gate read only these files.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

RESULTS_FILE = "results.jsonl"
CSV_FILE = "results.csv"
CONFIG_FILE = "config.json"

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"


def package_version() -> str:
    """Version of this suite as installed (``0+unknown`` when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vision-encoder-eval")
    except PackageNotFoundError:
        return "0+unknown"


# Packages whose versions can change a number; recorded in every run's config.json.
PROVENANCE_PACKAGES = (
    "torch", "torchvision", "timm", "transformers", "open_clip_torch", "safetensors", "numpy",
    "scikit-learn", "pillow", "mmsegmentation", "captum", "lmms_eval",
)


def environment() -> dict[str, Any]:
    """Python, installed versions of ``PROVENANCE_PACKAGES`` and the hardware that computed the numbers."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {"python": platform.python_version(), "vision-encoder-eval": package_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    versions["torch"] = torch.__version__  # with the build tag (+cu130, +cpu) that metadata drops
    hardware = {"cpu": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        hardware["cuda"] = torch.cuda.get_device_name()
    return {"versions": versions, "hardware": hardware}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Rows written before rows carried their variant were told apart by these extra keys.
LEGACY_VARIANT_FIELDS = ("layer", "pooling", "protocol")


def variant_of(extra: dict[str, Any], names: Iterable[str]) -> str:
    """``"layer=6, pooling=mean"``: the ``names`` present in ``extra``, in order; '' when none is."""
    return ", ".join(f"{name}={extra[name]}" for name in names if extra.get(name) not in (None, ""))


@dataclass
class ResultRow:
    """One metric of one encoder on one (suite, task, dataset).

    ``value`` is in the metric's natural unit (accuracies in percent, 0..100). ``ci_low``/``ci_high``
    bound a 95% bootstrap confidence interval where one is defined. ``per_item`` is a path relative to
    the run directory of a ``.npy`` vector of per-item scores whose mean (x100 for accuracies) is
    ``value``. Rows with ``status`` ``skipped`` or ``failed`` carry ``value=None`` and a ``reason``.

    ``variant`` tells apart rows of one (suite, task, dataset, metric), e.g. ``layer=6, pooling=mean``:
    made from the ``extra`` keys its suite declares (``SuiteSpec.variant_fields``); a row that no suite
    stamped (a file written before rows carried it, a row made by hand) derives it from
    ``LEGACY_VARIANT_FIELDS``. ``identity`` is what a row stands for wherever rows meet: the report's
    table lines and the gate's baseline entries.
    """

    encoder: str
    suite: str
    task: str
    dataset: str
    metric: str
    value: float | None
    higher_is_better: bool = True
    role: str = ""
    base: str = ""
    weights_hash: str = ""
    checkpoint: str = ""
    dataset_fingerprint: str = ""
    n: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    config_hash: str = ""
    seed: int = 0
    version: str = field(default_factory=package_version)
    time: str = field(default_factory=utc_now)
    status: str = STATUS_OK
    reason: str = ""
    per_item: str = ""
    variant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant is None:
            self.variant = variant_of(self.extra if isinstance(self.extra, dict) else {}, LEGACY_VARIANT_FIELDS)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(suite, task, dataset, metric)."""
        return (self.suite, self.task, self.dataset, self.metric)

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        """(suite, task, dataset, metric, variant): one metric of one encoder, the same in every run."""
        return (*self.key, self.variant)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRow":
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object per line, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"result row has unknown fields {sorted(unknown)}; written by a newer version?")
        for name in ("encoder", "suite", "task", "dataset", "metric"):
            if name in data and not isinstance(data[name], str):
                raise ValueError(f"field {name!r} must be a string, got {data[name]!r}")
        for name in ("value", "ci_low", "ci_high"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"field {name!r} must be a number or null, got {value!r}")
        if data.get("variant") is not None and not isinstance(data["variant"], str):
            raise ValueError(f"field 'variant' must be a string, got {data['variant']!r}")
        if not isinstance(data.get("extra", {}), dict):
            raise ValueError(f"field 'extra' must be an object, got {data['extra']!r}")
        return cls(**data)


def append_rows(run_dir: str | os.PathLike, rows: Iterable[ResultRow]) -> None:
    """Append rows to ``run_dir/results.jsonl`` (flushed and fsynced, so a crash loses nothing written)."""
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_dict(), sort_keys=True, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_rows(run_dir: str | os.PathLike) -> list[ResultRow]:
    """All rows of a run directory (or of a ``results.jsonl`` path)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results file; is this a run directory written by benchmarks.run?")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(ResultRow.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{line_no}: not a valid result row ({err})") from err
    return rows


def read_frame(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The rows of a run as a DataFrame, one column per field (``extra`` stays a dict column)."""
    return pd.DataFrame([row.to_dict() for row in read_rows(run_dir)])


def write_csv(run_dir: str | os.PathLike) -> Path:
    """Rewrite ``results.csv`` from ``results.jsonl`` (``extra`` JSON-encoded)."""
    frame = read_frame(run_dir)
    if "extra" in frame:
        frame["extra"] = frame["extra"].map(lambda value: json.dumps(value, sort_keys=True))
    path = Path(run_dir) / CSV_FILE
    frame.to_csv(path, index=False)
    return path
