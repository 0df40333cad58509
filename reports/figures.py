"""Matplotlib figures of one lineage, returned as base64 PNG strings for embedding in the HTML report.

Uses the object-oriented API on an Agg canvas (no pyplot, so no global backend state is touched):
* per-suite grouped bars (one panel per metric, x = task/dataset, one bar per encoder, 95% CI error bars);
* VQA bars (suite ``vqa``): one bar group per task (category or benchmark), per metric;
* layer-wise curves for rows that carry ``extra["layer"]`` (metric vs layer, one line per encoder, CI band),
  completed by the last block's output (rows with ``extra["block"]``), ticks labelled as the user gave
  the blocks (``3 (-1)``);
  for suite ``align`` metrics containing ``cka`` the figure is titled "CKA vs layer".
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports.load import Lineage, LoadedRow, is_ok, role_rank, row_layer

ROLE_COLOURS = {0: "#7f7f7f", 1: "#1f77b4", 2: "#d62728"}
OTHER_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAX_PANELS = 12
DPI = 90


@dataclass
class FigureImage:
    title: str
    caption: str
    png_base64: str


def encoder_colours(lineage: Lineage) -> dict[str, str]:
    """A stable colour per encoder: grey original, blue sft, red pivot, others from a fixed cycle."""
    colours: dict[str, str] = {}
    used: set[int] = set()
    others = 0
    for info in lineage.encoders:
        rank = role_rank(info.role) if info.name != lineage.name else 0
        if rank in ROLE_COLOURS and rank not in used:
            colours[info.name] = ROLE_COLOURS[rank]
            used.add(rank)
        else:
            colours[info.name] = OTHER_COLOURS[others % len(OTHER_COLOURS)]
            others += 1
    return colours


def _png(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # metadata None drops matplotlib's "Software" text chunk (it carries a URL).
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(count: int, width: float, height: float) -> tuple[Figure, list]:
    """Panels of ``width`` x ``height`` inches, at most 3 a row and at most about 14 inches wide (a
    wider figure is shrunk to the page and its labels become unreadable)."""
    cols = max(1, min(3, count, int(14 // width)))
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(width * cols, height * rows))
    axes = [figure.add_subplot(rows, cols, index + 1) for index in range(count)]
    return figure, axes


def _err(row) -> tuple[float, float]:
    if row.ci_low is None or row.ci_high is None:
        return 0.0, 0.0
    return max(0.0, row.value - row.ci_low), max(0.0, row.ci_high - row.value)


def _bar_panel(ax, groups: list[str], cells: dict[tuple[str, str], LoadedRow], encoders: list[str], colours) -> None:
    width = 0.8 / max(1, len(encoders))
    for index, name in enumerate(encoders):
        xs, heights, lows, highs = [], [], [], []
        for position, group in enumerate(groups):
            item = cells.get((group, name))
            if item is None:
                continue
            low, high = _err(item.row)
            xs.append(position - 0.4 + width * (index + 0.5))
            heights.append(item.row.value)
            lows.append(low)
            highs.append(high)
        if xs:
            errors = [lows, highs] if any(lows) or any(highs) else None
            ax.bar(xs, heights, width, yerr=errors, capsize=2, color=colours[name], label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _chunks(keys: list) -> list[list]:
    """Panels in figures of at most MAX_PANELS each: every panel is drawn, none dropped."""
    return [keys[start : start + MAX_PANELS] for start in range(0, len(keys), MAX_PANELS)]


def _bars_by_metric(items: list[LoadedRow], lineage: Lineage, colours, group_of) -> list[Figure]:
    """One panel per (metric, dataset), one bar group per ``group_of(row)``, one bar per encoder."""
    metrics: dict[tuple[str, str], dict[tuple[str, str], LoadedRow]] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for item in items:
        group, panel = group_of(item), (item.row.metric, item.row.dataset)
        metrics.setdefault(panel, {})[(group, item.row.encoder)] = item
        if group not in groups.setdefault(panel, []):
            groups[panel].append(group)
    names = [info.name for info in lineage.encoders]
    return [_bar_figure(shown, metrics, groups, names, colours) for shown in _chunks(list(metrics))]


def _bar_figure(shown: list, metrics: dict, groups: dict, names: list[str], colours) -> Figure:
    widest = max(len(groups[panel]) for panel in shown)
    figure, axes = _grid(len(shown), max(3.5, min(9.0, 0.5 * widest * max(1, len(names)) + 1.5)), 3.2)
    for ax, panel in zip(axes, shown):
        _bar_panel(ax, groups[panel], metrics[panel], names, colours)
        higher = next(iter(metrics[panel].values())).row.higher_is_better
        metric, dataset = panel
        ax.set_title(f"{metric} ({'higher' if higher else 'lower'} is better)" + (f"\n{dataset}" if dataset else ""), fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, 1.0))
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))  # 0.4 inch for the legend
    return figure


def _layer_key(layer) -> tuple:
    try:
        return (0, float(layer), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(layer))


def _panel_key(row) -> tuple[str, ...]:
    # One panel per pooling too: lines must join values of one feature across layers.
    return (row.task, row.dataset, row.metric) + ((f"pooling={row.extra['pooling']}",) if row.extra.get("pooling") else ())


def _layer_figures(items: list[LoadedRow], lineage: Lineage, colours) -> list[Figure]:
    panels: dict[tuple[str, ...], dict[str, list[LoadedRow]]] = {}
    for item in items:
        panels.setdefault(_panel_key(item.row), {}).setdefault(item.row.encoder, []).append(item)
    return [_layer_figure(shown, panels, lineage, colours) for shown in _chunks(list(panels))]


# The model's own output (rows without a layer but with ``extra["block"]``) sits half a step after its block.
OUTPUT_OFFSET = 0.5


def _curve_x(row):
    """x of a row on a metric-vs-layer curve: its layer, or its block + OUTPUT_OFFSET for the output."""
    layer = row_layer(row)
    return layer if layer is not None else row.extra["block"] + OUTPUT_OFFSET


def _tick_label(row) -> str:
    """The block as the user gave it: ``3 (-1)`` for --layers -1 on a 4-block model, ``last (output)``."""
    if row_layer(row) is None:
        return "last\n(output)"
    layer, given = row_layer(row), row.extra.get("layer_label")
    return str(layer) if given in (None, "", str(layer)) else f"{layer}\n({given})"


def _layer_figure(shown: list, panels: dict, lineage: Lineage, colours) -> Figure:
    figure, axes = _grid(len(shown), 4.2, 3.0)
    for ax, key in zip(axes, shown):
        items = [item for lines in panels[key].values() for item in lines]
        layers = sorted({str(_curve_x(item.row)) for item in items}, key=_layer_key)
        position = {layer: index for index, layer in enumerate(layers)}
        numeric = all(_layer_key(layer)[0] == 0 for layer in layers)
        ticks = {str(_curve_x(item.row)): _tick_label(item.row) for item in items}
        for info in lineage.encoders:
            lines = sorted(panels[key].get(info.name, []), key=lambda item: _layer_key(_curve_x(item.row)))
            if not lines:
                continue
            xs = [float(_curve_x(i.row)) if numeric else position[str(_curve_x(i.row))] for i in lines]
            ys = [i.row.value for i in lines]
            ax.plot(xs, ys, marker="o", markersize=3, color=colours[info.name], label=info.name)
            if all(i.row.ci_low is not None and i.row.ci_high is not None for i in lines):
                ax.fill_between(xs, [i.row.ci_low for i in lines], [i.row.ci_high for i in lines],
                                color=colours[info.name], alpha=0.15, linewidth=0)
        if numeric and all(ticks[layer] == layer for layer in layers):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        elif numeric:
            ax.set_xticks([float(layer) for layer in layers])
            ax.set_xticklabels([ticks[layer] for layer in layers], fontsize=7)
        else:
            ax.set_xticks(range(len(layers)))
            ax.set_xticklabels(layers, fontsize=8)
        task, dataset, metric = key[:3]
        ax.set_title(" / ".join((task, dataset) + key[3:]), fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _group(item: LoadedRow) -> str:
    """x-axis label of a bar group (the panel names the dataset): task, pooling when the row has one."""
    row = item.row
    parts = [row.task]
    if row.extra.get("pooling") not in (None, ""):
        parts.append(f"pool={row.extra['pooling']}")
    return "\n".join(parts)


def _vqa_group(item: LoadedRow) -> str:
    row = item.row
    category = row.extra.get("category")
    label = row.task if not category or category == row.task else f"{row.task}\n({category})"
    return label + (f"\npool={row.extra['pooling']}" if row.extra.get("pooling") not in (None, "") else "")


def _suite_figures(suite: str, rows: list[LoadedRow], lineage: Lineage, colours) -> list[FigureImage]:
    images: list[FigureImage] = []
    # Data-quality counts (task "data", e.g. unreadable images) are in the table, not worth a bar.
    flat = [item for item in rows if row_layer(item.row) is None and item.row.task != "data"]
    layered = [item for item in rows if row_layer(item.row) is not None]
    if layered:
        # The last block's output completes each curve (rows that name their block, e.g. the cls suite's).
        curve_keys = {_panel_key(item.row) for item in layered}
        layered += [item for item in flat if isinstance(item.row.extra.get("block"), int) and _panel_key(item.row) in curve_keys]
    if suite.lower() == "vqa":
        figures = _bars_by_metric(flat, lineage, colours, _vqa_group)
        title, caption = "VQA", "One bar group per VQA category or benchmark; error bars are 95% CIs where defined."
    else:
        figures = _bars_by_metric(flat, lineage, colours, _group)
        title, caption = suite, "Grouped bars per metric and dataset; error bars are 95% CIs where defined."
    images.extend(FigureImage(title, caption, _png(figure)) for figure in figures)
    cka = [item for item in layered if suite.lower() == "align" and "cka" in item.row.metric.lower()]
    cka_ids = {id(item) for item in cka}
    rest = [item for item in layered if id(item) not in cka_ids]
    for subset, name in ((cka, f"{suite}: CKA vs layer"), (rest, f"{suite}: metric vs layer")):
        images.extend(FigureImage(name, "One line per encoder; band = 95% CI where defined.", _png(figure))
                      for figure in _layer_figures(subset, lineage, colours))
    return images


def lineage_figures(lineage: Lineage) -> tuple[list[FigureImage], list[str]]:
    """All figures of a lineage (possibly none), in suite order of first appearance, and the errors of
    suites whose figures could not be drawn (the report shows them instead of losing the whole report)."""
    colours = encoder_colours(lineage)
    ok_rows = [item for item in lineage.rows if is_ok(item.row)]
    suites = list(dict.fromkeys(item.row.suite for item in ok_rows))
    images: list[FigureImage] = []
    errors: list[str] = []
    for suite in suites:
        try:
            images.extend(_suite_figures(suite, [item for item in ok_rows if item.row.suite == suite], lineage, colours))
        except Exception as err:  # noqa: BLE001 - any plotting failure becomes a visible note
            errors.append(f"figures of suite {suite!r} could not be drawn: {type(err).__name__}: {err}")
    return images, errors
