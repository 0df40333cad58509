"""What a suite declares when it registers: its typed options, what it needs of its dataset and of
the encoders, its headline metrics and the fields that tell its rows apart.

The runner reads only these declarations: it generates the suite's flags and plan keys from
``options``, checks ``needs`` and ``encoder_check`` before any model loads, gives the suite its own
dataset and its own config hash, and stamps every row with the suite's ``variant_fields``. The
report and the gate read the headline metrics and variants from what the run wrote, never from here.

A suite of another package registers through the ``vision_encoder_eval.suites`` entry-point group:
the entry point names a :class:`SuiteSpec` (or a function decorated with :func:`register_suite`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from common.registry import Registry

if TYPE_CHECKING:
    from benchmarks.results import ResultRow
    from encoders import EncoderSpec

    from .base import LoadedEncoder, RunContext


@dataclass(frozen=True)
class NoOptions:
    """The options of a suite that has none."""


@dataclass(frozen=True)
class DataNeeds:
    """What a suite requires of its dataset: every capability in ``all_of`` (``imagesets``
    capability names: labels, masks, boxes, captions, preferences, image_files), at least one of
    ``any_of`` (when given), and the ``splits`` (the run opens each before any model loads and hands the
    suite the opened split). ``none`` marks a suite that reads no dataset of ours; ``decoded``: its images
    go through the feature extractor, so ``--decode gpu`` applies to them (it needs image files)."""

    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    none: bool = False
    decoded: bool = True

    def describe(self) -> str:
        if self.none:
            return "no dataset"
        parts = list(self.all_of) + ([" or ".join(self.any_of)] if self.any_of else [])
        text = " + ".join(parts) if parts else "images"
        return f"{text} ({'/'.join(self.splits)} split{'s' if len(self.splits) > 1 else ''})" if self.splits else text


@dataclass(frozen=True)
class SuiteSpec:
    """A registered suite. ``run(context, encoders)`` returns its rows; ``context.options`` is an
    instance of ``options``.

    - ``flag_prefix``: flags are ``--{flag_prefix}-{field}`` (``cls`` has none: ``--linear-epochs``).
    - ``headline``: (task, metric[, preferred variant]) in order of preference: the verdict's line of this
      suite (among a task's variants, the preferred one, e.g. ``pooling=cls``, else the first).
    - ``control_headline``: (task, metric) lines in order of preference on which a positive control is judged,
      when the headline cannot see its planted defect (grad's headline is DPO minus SFT, and shuffled tokens
      move both maps off the object alike: the maps' inside mass is what falls); empty: the headline.
    - ``variant_fields``: ``extra`` keys that tell apart rows of one (suite, task, dataset, metric),
      e.g. ``layer``/``pooling``; they become the row's ``variant``, its identity everywhere.
    - ``uses``: suites whose options change this suite's numbers (loc fits its head as cls does).
    - ``encoder_check(options, specs)``: '' or why no encoder of the run can be evaluated (no MLLM),
      checked before loading; ``check_loaded(options, loaded)``: '' or a usage problem found once the
      encoders are loaded, before any feature is computed (a block index an encoder lacks).
    - ``order``: position under ``--suite all``.
    """

    name: str
    run: Callable[["RunContext", list["LoadedEncoder"]], list["ResultRow"]]
    options: type = NoOptions
    needs: DataNeeds = DataNeeds()
    headline: tuple[tuple[str, ...], ...] = ()
    control_headline: tuple[tuple[str, ...], ...] = ()
    variant_fields: tuple[str, ...] = ()
    flag_prefix: str = ""
    uses: tuple[str, ...] = ()
    encoder_check: Callable[[Any, list["EncoderSpec"]], str] | None = None
    check_loaded: Callable[[Any, list["LoadedEncoder"]], str] | None = None
    order: int = 100
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"suite name {self.name!r} must be a Python identifier (it names a plan table and a --data SUITE=SPEC override)")


def _from_entry_point(obj: object) -> "SuiteSpec":
    spec = getattr(obj, "spec", obj)
    if not isinstance(spec, SuiteSpec):
        raise TypeError(f"entry point of group vision_encoder_eval.suites names {obj!r}; it must name a SuiteSpec or a function decorated with register_suite")
    return spec


SUITES: Registry[SuiteSpec] = Registry("suite", entry_point_group="vision_encoder_eval.suites", from_entry_point=_from_entry_point)


def register_suite(name: str, **declared: Any) -> Callable:
    """Decorator: register the decorated ``run`` function as suite ``name`` with the given
    :class:`SuiteSpec` fields; the function gets its spec as ``.spec``."""

    def decorate(run: Callable) -> Callable:
        spec = SuiteSpec(name=name, run=run, **declared)
        SUITES.add(name, spec)
        run.spec = spec  # type: ignore[attr-defined]
        return run

    return decorate


def suite_specs() -> list[SuiteSpec]:
    """Every registered suite (entry points included), in ``--suite all`` order."""
    return sorted((SUITES.get(name) for name in SUITES.names()), key=lambda spec: (spec.order, spec.name))


def needs_an_mllm(options: Any, specs: list["EncoderSpec"]) -> str:
    """encoder_check of suites that run an encoder's MLLM: at least one encoder has one."""
    if any(has_mllm(spec) for spec in specs):
        return ""
    return "no encoder of the run has an MLLM: give encoders an mllm directory in the manifest (python -m train writes one) or pass an MLLM directory as --encoder"


def has_mllm(spec: "EncoderSpec") -> bool:
    """The encoder comes with an MLLM: a manifest ``mllm`` field, or an MLLM directory (of any layout
    ``train.mllm.load_mllm`` reads) as its checkpoint."""
    from train.mllm_layouts import is_mllm_dir

    return bool(spec.mllm) or is_mllm_dir(spec.checkpoint)
