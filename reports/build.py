"""Build one self-contained HTML report from one or more run directories.

    python -m reports.build RUN_DIR [RUN_DIR ...] -o report.html [--title TITLE]

The report groups encoders into lineages (an original and the checkpoints trained from it). It opens
with its answer (``reports.summary``: per lineage and suite the headline value of each arm and the
verdict sentence; the controls' outcomes), then one box per run with the notes several runs share
stated once (``reports.method``); then, per lineage, the verdict details, a summary table (value +- 95%
CI, delta versus the original, significance mark), matplotlib figures and image galleries; then
provenance (encoders, weights hashes, checkpoints, remap reports, each run's config.json and timings,
package versions) and every skipped or failed row with its reason. Inline CSS, base64 PNGs, no scripts, no external references: it opens from disk offline.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2

from benchmarks.results import STATUS_FAILED, STATUS_SKIPPED
from reports.compare import ALPHA, ARMS_TEST, CORRECTION, SIG_ARMS, SIG_CI, SIG_NONE, SIG_PAIRED, lineage_analysis
from reports.figures import lineage_figures
from reports.format import num, signed
from reports.gallery import lineage_galleries
from reports.load import EncoderInfo, PerItemCache, ReportData, RunData, is_ok, load_runs
from reports.method import method_view
from reports.summary import control_checks, controls_by_suite, lineage_summary
from reports.template import TEMPLATE

REPORT_PACKAGES = ("numpy", "pandas", "matplotlib", "jinja2")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [("a.b", "1.5"), ...]; leaves formatted as numbers when numeric."""
    if isinstance(value, dict):
        items: list[tuple[str, str]] = []
        for key, inner in value.items():
            items.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return items
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(prefix, num(value))]
    return [(prefix, value if isinstance(value, str) else json.dumps(value, default=str))]


def _details_summary(config: dict[str, Any]) -> str:
    """One line for the collapsed settings cell: layout, parameters, input resolution."""
    parts = []
    if config.get("remap_summary"):
        parts.append(f"layout: {config['remap_summary']}")
    if isinstance(config.get("parameters"), int):
        parts.append(f"{config['parameters']:,} parameters")
    preprocess = config.get("preprocess")
    if isinstance(preprocess, dict) and preprocess.get("resolution"):
        parts.append(f"{preprocess['resolution']} px")
    return "; ".join(parts) or "settings"


def _encoder_view(info: EncoderInfo, data: ReportData) -> dict[str, Any]:
    config = dict(info.config)
    family = str(config.pop("family", "") or "")
    arch = str(config.pop("arch", "") or config.pop("architecture", "") or "")
    for key in ("name", "role", "base", "checkpoint", "weights_hash"):
        config.pop(key, None)
    if not any(key in config for key in ("remap", "remap_report")):
        for item in data.rows:
            if item.row.encoder == info.name:
                for key in ("remap", "remap_report"):
                    if item.row.extra.get(key) not in (None, "", {}, []):
                        config[key] = item.row.extra[key]
                        break
                if any(key in config for key in ("remap", "remap_report")):
                    break
    return {
        "name": info.name,
        "role": info.role,
        "lineage": info.lineage,
        "weights_hashes": info.weights_hashes,
        "checkpoints": info.checkpoints + [str(c) for c in [config.pop("checkpoint_path", "")] if c],
        "family": family,
        "arch": arch,
        "runs": info.runs,
        "details": _pretty(config) if config else "",
        "details_summary": _details_summary(config),
    }


def _versions(data: ReportData) -> list[dict[str, str]]:
    """One row per (package, version), naming every source that reported it: result rows, each run's
    config.json, and the report builder itself."""
    sources: dict[tuple[str, str], list[str]] = {}
    for value in sorted({item.row.version for item in data.rows if item.row.version}):
        sources.setdefault(("vision-encoder-eval", value), []).append("result rows")
    for run in data.runs:
        for key in ("versions", "package_versions", "packages"):
            found = run.config.get(key)
            if isinstance(found, dict):
                for name, value in found.items():
                    sources.setdefault((str(name), str(value)), []).append(f"{run.label} config.json")
    for name in REPORT_PACKAGES:
        try:
            sources.setdefault((name, version(name)), []).append("report builder")
        except PackageNotFoundError:
            pass
    return [{"name": name, "version": value, "source": ", ".join(where)} for (name, value), where in sources.items()]


def _run_view(run: RunData) -> dict[str, Any]:
    counts = {"ok": 0, STATUS_SKIPPED: 0, STATUS_FAILED: 0}
    for row in run.rows:
        counts["ok" if is_ok(row) else (STATUS_SKIPPED if row.status == STATUS_SKIPPED else STATUS_FAILED)] += 1
    timings = run.config.get("timings")
    hardware = run.config.get("hardware")
    return {
        "label": run.label,
        "path": str(run.path.resolve()),
        "counts": counts,
        "timings": _flatten(timings) if isinstance(timings, dict) else ([("timings", str(timings))] if timings else []),
        "config_json": _pretty(run.config) if run.config else "",
        "hardware": ", ".join(f"{key} {value}" for key, value in hardware.items()) if isinstance(hardware, dict) else "",
        "config_error": run.config_error,
        "cache_hits": _cache_hits(run),
    }


def _selected_text(selected: dict[str, Any]) -> str:
    """``lr=0.01, weight_decay=1e-4, epochs=30``: the hyperparameters a probe chose, for the table."""
    return ", ".join(f"{key}={num(value) if isinstance(value, float) else value}" for key, value in selected.items())


def _cache_hits(run: RunData) -> str:
    """Which encoders' features came from the feature store (rows' ``extra["features_cached"]``)."""
    hits: dict[str, set] = {}
    for row in run.rows:
        cached = row.extra.get("features_cached")
        if isinstance(cached, bool):
            hits.setdefault(row.encoder, set()).add(cached)
    if not hits:
        return ""
    parts = [f"{name}: {'cache hit' if states == {True} else ('computed' if states == {False} else 'partly cached')}" for name, states in hits.items()]
    return "; ".join(parts)


def _lineage_view(lineage, index: int, cache: PerItemCache, n_boot: int, headlines: dict[str, list], control_headlines: dict[str, list]) -> dict[str, Any]:
    lines, verdicts, family, arm_lines = lineage_analysis(lineage, cache, n_boot=n_boot, headlines=headlines)
    figures, figure_errors = lineage_figures(lineage)
    tests = {SIG_PAIRED: 0, SIG_CI: 0, SIG_NONE: 0, SIG_ARMS: 0}
    for cells in [line.cells for line in lines] + [item.cells for item in arm_lines]:
        for cell in cells:
            if cell.delta is not None:
                tests[cell.test] += 1
    return {
        "name": lineage.name,
        "encoders": lineage.encoders,
        "has_original": lineage.original is not None,
        "flat": [line for line in lines if line.layer is None],
        "layered": [line for line in lines if line.layer is not None],
        "tests": {"paired": tests[SIG_PAIRED], "ci": tests[SIG_CI], "none": tests[SIG_NONE], "arms": tests[SIG_ARMS], "family": family},
        "verdicts": verdicts,
        "summary": lineage_summary(lineage, verdicts, index),
        "controls": control_checks(lineage, lines, verdicts, control_headlines),
        "arms": lineage.arms() if arm_lines else [],
        "arm_lines": [item for item in arm_lines if item.line.layer is None],
        "replicated": bool(arm_lines),
        "figures": figures,
        "figure_errors": figure_errors,
        "galleries": lineage_galleries(lineage),
    }


def _edge_warnings(data: ReportData) -> list[str]:
    """One line per row whose hyperparameter choice sat on an edge of the searched range (``extra.at_edge``)."""
    lines = []
    for item in data.rows:
        edges = item.row.extra.get("at_edge")
        if edges and item.row.metric == "top1":
            where = ", ".join(f"{key}={item.row.extra[key]}" for key in ("layer", "pooling") if item.row.extra.get(key) not in (None, ""))
            shown = ", ".join(edges) if isinstance(edges, list) else str(edges)
            lines.append(
                f"{item.row.encoder} {item.row.suite}/{item.row.task} ({where}): the chosen hyperparameter lies on the "
                f"edge of the searched range ({shown}); the optimum may lie beyond it."
            )
    return lines


def render_report(data: ReportData, title: str | None = None, n_boot: int = 2000) -> str:
    """The HTML text of the report for already-loaded runs."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["num"] = num
    environment.filters["signed"] = signed
    environment.filters["selected"] = _selected_text
    cache = PerItemCache()
    row_timings = [
        {
            "encoder": item.row.encoder,
            "suite": item.row.suite,
            "task": item.row.task,
            "dataset": item.row.dataset,
            "timings": ", ".join(f"{key}={value}" for key, value in _flatten(item.row.extra["timings"])),
        }
        for item in data.rows
        if isinstance(item.row.extra.get("timings"), dict) and item.row.extra["timings"]
    ]
    warnings = [f"{len(data.duplicates)} row(s) appear in several runs; the later run's value is shown (see Provenance)."] if data.duplicates else []
    warnings += [note[0].upper() + note[1:] + "." for note in data.renamed]
    warnings += _edge_warnings(data)
    lineages = [_lineage_view(lineage, index, cache, n_boot, data.headlines(), data.headlines("control_headline")) for index, lineage in enumerate(data.lineages, start=1)]
    return environment.from_string(TEMPLATE).render(
        title=title or "Vision encoder evaluation report",
        alpha=ALPHA,
        correction=CORRECTION,
        arms_test=ARMS_TEST,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        runs=[_run_view(run) for run in data.runs],
        method=method_view(data.runs),
        n_rows=len(data.rows),
        n_encoders=len(data.encoders),
        warnings=warnings,
        lineages=lineages,
        controls=controls_by_suite([check for view in lineages for check in view["controls"]]),
        encoders=[_encoder_view(info, data) for info in data.encoders],
        versions=_versions(data),
        row_timings=row_timings,
        duplicates=data.duplicates,
        not_ok=[item for item in data.rows if not is_ok(item.row)],
    )


def build_report(run_dirs: list[Path], out_path: Path, title: str | None = None) -> Path:
    """Write the HTML report of ``run_dirs`` to ``out_path`` (parents created) and return ``out_path``.

    Raises FileNotFoundError naming the directory when a run directory has no results.jsonl, and
    ValueError when one has no rows, when ``out_path`` is a directory, or when an encoder name stands
    for different weights that its rows do not tell apart.
    """
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ValueError(f"-o {out_path}: is a directory; pass an .html file path (e.g. {out_path / 'report.html'})")
    data = load_runs([Path(path) for path in run_dirs])
    html = render_report(data, title=title)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(out_path.name + ".tmp")
    try:
        temporary.write_text(html, encoding="utf-8")
        temporary.replace(out_path)
    finally:
        temporary.unlink(missing_ok=True)  # after a failed write or rename: no stray file
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by benchmarks.run")
    parser.add_argument("-o", "--out", type=Path, default=Path("report.html"), help="output HTML file (default report.html)")
    parser.add_argument("--title", default=None, help="report title")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.run_dirs, args.out, title=args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f"reports.build: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"reports.build: error: {err.filename or args.out}: {err.strerror or err}; pass -o a writable .html file path", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
