"""Suite specs: a suite from another package registers through the entry point and gets its flags,
validation and row identity like the built-in ones; the gate and the report give every row one identity."""
from __future__ import annotations

import sys
import textwrap

import pytest

from benchmarks import check, run
from benchmarks.results import ResultRow, append_rows, read_rows
from benchmarks.suites import SUITES
from reports.load import load_runs
from tests.benchmarks.conftest import write_tiny_checkpoint

TOY = textwrap.dedent('''
    from dataclasses import dataclass

    from common.options import option
    from benchmarks.suites.spec import DataNeeds, SuiteSpec


    @dataclass(frozen=True)
    class ToyOptions:
        repeats: int = option(2, "value the toy suite reports", minimum=1)
        flavour: str = option("plain", "which flavour of toy", choices=("plain", "fancy"))


    def run(context, encoders):
        return [context.row(loaded, suite="toy", task="count", dataset=context.data, metric="repeats", value=float(context.options.repeats),
                            extra={"flavour": context.options.flavour}) for loaded in encoders]


    SPEC = SuiteSpec(name="toy", run=run, options=ToyOptions, needs=DataNeeds(all_of=("labels",), splits=("val",)),
                     variant_fields=("flavour",), flag_prefix="toy", order=90, summary="a suite from another package")
''')


@pytest.fixture
def toy_suite(tmp_path, monkeypatch):
    """An installed distribution (a dist-info on sys.path) whose entry point adds suite ``toy``."""
    site = tmp_path / "site"
    (site / "toy_suite_dist-0.1.dist-info").mkdir(parents=True)
    (site / "toy_suite_dist-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-suite-dist\nVersion: 0.1\n")
    (site / "toy_suite_dist-0.1.dist-info" / "entry_points.txt").write_text("[vision_encoder_eval.suites]\ntoy = toy_suite_module:SPEC\n")
    (site / "toy_suite_module.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(SUITES, "_entry_points_loaded", False)
    yield
    SUITES._items.pop("toy", None)
    sys.modules.pop("toy_suite_module", None)


def _main(tmp_path, *argv):
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    return run.main(["--encoder", str(checkpoint), "--data", "digits", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                     "--workers", "0", "--no-report", *argv])


def test_an_entry_point_suite_gets_flags_validation_and_row_identity(tmp_path, toy_suite, capsys):
    help_text = run.build_parser().format_help()
    assert "--toy-repeats" in help_text and "--toy-flavour" in help_text and "a suite from another package" in help_text
    assert _main(tmp_path, "--suite", "toy", "--toy-repeats", "0") == 2
    assert "--toy-repeats '0': must be >= 1" in capsys.readouterr().err
    assert _main(tmp_path, "--suite", "toy", "--toy-flavour", "sour") == 2
    assert "choose from plain, fancy" in capsys.readouterr().err
    assert _main(tmp_path, "--suite", "toy", "--data", "toy=shapes:n=20:size=32", "--toy-repeats", "5", "--toy-flavour", "fancy") == 0
    rows = read_rows(tmp_path / "run")
    assert [(r.suite, r.value, r.variant, r.dataset) for r in rows] == [("toy", 5.0, "flavour=fancy", "shapes:n=20:size=32")]
    assert rows[0].identity == ("toy", "count", "shapes:n=20:size=32", "repeats", "flavour=fancy")
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[toy]\nrepeats = 3\n')
    assert _main(tmp_path, "--suite", "toy", "--plan", str(plan_file)) == 0
    assert read_rows(tmp_path / "run")[0].value == 3.0


def test_gate_and_report_give_a_pivot_eval_and_a_lineage_vqa_row_distinct_identities(tmp_path):
    from benchmarks.suites.base import LoadedEncoder, RunContext
    from benchmarks.features import ExtractionConfig
    from benchmarks.suites.vqa import vqa_suite
    from encoders import EncoderSpec, load_encoder

    encoder = load_encoder(write_tiny_checkpoint(tmp_path / "enc.safetensors"))
    context = RunContext(data="shapes", run_dir=tmp_path, cache_dir=tmp_path, extraction=ExtractionConfig(), seed=0, suite="vqa",
                         variant_fields=vqa_suite.spec.variant_fields)
    loaded = LoadedEncoder(EncoderSpec(checkpoint="enc.safetensors", name="enc"), encoder)
    lineage = context.row(loaded, suite="vqa", task="shapes_vqa", dataset="lmms-eval", metric="exact_match", value=40.0)
    fresh = context.row(loaded, suite="vqa", task="shapes_vqa", dataset="lmms-eval", metric="exact_match", value=35.0, extra={"protocol": "pivot-eval"})
    assert lineage.identity != fresh.identity and fresh.variant == "protocol=pivot-eval"
    run_dir = tmp_path / "run"
    append_rows(run_dir, [lineage, fresh])
    baseline = check.make_baseline(read_rows(run_dir), "enc", run_dir)
    assert sorted(e["variant"] for e in baseline["entries"]) == ["", "protocol=pivot-eval"]
    comparisons = check.compare(baseline, read_rows(run_dir), "enc", {})
    assert [c.verdict for c in comparisons] == ["ok", "ok"]
    report_rows = load_runs([run_dir]).rows
    assert sorted(item.row.identity for item in report_rows) == sorted(tuple(check.entry_key(e)) for e in baseline["entries"])
    assert {item.row.value for item in report_rows} == {40.0, 35.0}  # neither replaced the other


def test_rows_written_before_rows_carried_a_variant_keep_their_old_identity():
    legacy = {"encoder": "e", "suite": "cls", "task": "linear", "dataset": "d", "metric": "top1", "value": 1.0, "extra": {"pooling": "cls", "layer": 3}}
    assert ResultRow.from_dict(legacy).variant == "layer=3, pooling=cls"


def test_one_command_runs_every_suite_each_on_its_own_dataset(tmp_path, mllm_lineage):
    from benchmarks.results import read_frame

    from .conftest import DATA

    status = run.main(["--encoders", str(mllm_lineage), "--suite", "all", "--data", DATA, "--data", "cls=digits:size=32", "--out", str(tmp_path / "run"),
                       "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report", "--linear-epochs", "1", "--seg-protocols", "patch_probe",
                       "--seg-epochs", "1", "--seg-min-steps", "0", "--seg-seeds", "1", "--loc-items", "6", "--grad-items", "4", "--vqa-tasks", "shapes_vqa", "--vqa-items", "6"])
    assert status == 0
    frame = read_frame(tmp_path / "run")
    ok = frame[frame.status == "ok"]
    assert set(ok.suite) == {"cls", "seg", "loc", "grad", "align", "vqa"}
    assert set(ok[ok.suite == "cls"].dataset) == {"digits:size=32"} and set(ok[ok.suite == "seg"].dataset) == {DATA}
    hashes = frame.groupby("suite").config_hash.nunique()
    assert (hashes == 1).all() and frame.config_hash.nunique() == 6  # one config hash per suite
