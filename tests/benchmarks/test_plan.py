"""The plan of a run: typed options from flags and plan files, per-suite datasets, checks before any
load, per-suite config hashes, and the options reference (docs/options.md) that documents every option."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.plan import Inputs, RunSettings, check_requirements, resolve
from benchmarks.results import read_rows
from benchmarks.suites import suite_specs
from common.options import options_of
from tests.benchmarks.conftest import write_tiny_checkpoint

DATA = "shapes:n=60:n_val=20:seed=0:size=32"
OPTIONS_REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def _plan(*argv: str):
    """The resolved plan of a command line (no model is loaded)."""
    inputs, plan, _ = resolve(run.parse_args(list(argv)))
    return plan


def _every_flag() -> list[str]:
    flags = [opt.flag for cls in (Inputs, RunSettings) for opt in options_of(cls)]
    return flags + [opt.flag for spec in suite_specs() for opt in options_of(spec.options, spec.flag_prefix)]


def test_every_option_is_in_help_and_in_the_options_reference():
    help_text = run.build_parser().format_help()
    reference = OPTIONS_REFERENCE.read_text(encoding="utf-8")
    for flag in _every_flag():
        assert flag in help_text, f"{flag} missing from --help"
        assert re.search(rf"`{re.escape(flag)}[ `=]", reference), f"{flag} is not documented in docs/options.md"


def test_flags_become_typed_options_and_defaults_are_written_once():
    plan = _plan("--seg-iters", "60", "--seg-protocols", "patch_probe,fast_linear", "--loc-layers", "-1", "--vqa-tasks", "mme,shapes_vqa")
    assert plan.options_of("seg").iters == 60 and plan.options_of("seg").protocols == ("patch_probe", "fast_linear")
    assert plan.options_of("loc").layers == (-1,) and plan.options_of("vqa").tasks == ("mme", "shapes_vqa")
    default = _plan()
    assert default.options_of("vqa").items == 200 and default.options_of("cls").linear_epochs == 10


@pytest.mark.parametrize("argv, flag, words", [
    (["--seg-protocols", "bogus"], "--seg-protocols", "unknown bogus"),
    (["--seg-blocks", "3"], "--seg-blocks", "choose from 1, 4"),
    (["--seg-iters", "0"], "--seg-iters", ">= 1"),
    (["--seg-mmseg-lr", "0"], "--seg-mmseg-lr", "must be > 0"),
    (["--seg-epochs", "two"], "--seg-epochs", "expected an integer"),
    (["--loc-topk", "1.5"], "--loc-topk", "<= 1"),
    (["--loc-layers", "a,b"], "--loc-layers", "expected an integer"),
    (["--loc-items", "-1"], "--loc-items", ">= 0"),
    (["--grad-items", "-2"], "--grad-items", ">= 0"),
    (["--align-items", "-5"], "--align-items", ">= 0"),
    (["--vqa-items", "0"], "--vqa-items", ">= 1"),
    (["--vqa-limit", "-1"], "--vqa-limit", ">= 0"),
    (["--vqa-batch-size", "0"], "--vqa-batch-size", ">= 1"),
    (["--linear-epochs", "0"], "--linear-epochs", ">= 1"),
    (["--layers", "x"], "--layers", "block indices"),
    (["--batch-size", "0"], "--batch-size", ">= 1"),
    (["--seed", "-1"], "--seed", ">= 0"),
    (["--workers", "-1"], "--workers", ">= 0"),
    (["--data", "nope=shapes"], "--data", "not a suite"),
    (["--data", "digits", "--data", "shapes"], "--data", "already given"),
    (["--set", "novalue"], "--set", "NAME=VALUE"),
])
def test_bad_option_values_exit_2_before_any_load(tmp_path, capsys, argv, flag, words):
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    status = run.main(["--encoder", str(checkpoint), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), *argv])
    err = capsys.readouterr().err
    assert status == 2 and flag in err and words in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # nothing loaded, nothing written


def test_per_suite_data_overrides_the_default_and_the_plan(tmp_path):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('data = "digits"\n[seg]\ndata = "shapes:n=40"\niters = 7\n')
    plan = _plan("--plan", str(plan_file), "--data", "loc=shapes:n=30", "--seg-epochs", "3")
    assert plan.suite("cls").data == "digits" and plan.suite("loc").data == "shapes:n=30" and plan.suite("seg").data == "shapes:n=40"
    assert plan.options_of("seg").iters == 7 and plan.options_of("seg").epochs == 3  # plan value, then a flag on top
    plan = _plan("--plan", str(plan_file), "--data", "shapes:n=50", "--seg-iters", "9")
    assert plan.suite("cls").data == "shapes:n=50" and plan.suite("seg").data == "shapes:n=40"  # the plan's [seg] data beats the default
    assert plan.options_of("seg").iters == 9


def test_plan_variables_come_from_set_or_the_environment(tmp_path, monkeypatch):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('suites = ["cls"]\n[cls]\ndata = "shapes:n=${n_images}"\n[seg]\ndata = "ade20k:root=${ade_root}"\n')
    assert _plan("--plan", str(plan_file), "--set", "n_images=30").suite("cls").data == "shapes:n=30"  # seg does not run: its variable may stay unset
    monkeypatch.setenv("N_IMAGES", "40")
    assert _plan("--plan", str(plan_file)).suite("cls").data == "shapes:n=40"
    monkeypatch.delenv("N_IMAGES")
    with pytest.raises(Exception, match=r"\$\{n_images\}.*--set n_images=VALUE"):
        _plan("--plan", str(plan_file))


@pytest.mark.parametrize("text, words", [
    ('bogus = 1\n', "unknown key(s) bogus"),
    ('[seg]\niters = "many"\n', "[seg] iters"),
    ('[seg]\nprotocols = ["patch_probe", "bogus"]\n', "unknown bogus"),
    ('seg = 3\n', "must be a table"),
    ('[cls]\nlinear = "exact"\n', "choose from auto"),
    ('suites = "cls,nope"\n', "unknown suite(s) nope"),
    ('this is not toml', "not valid TOML"),
])
def test_bad_plan_files_exit_2_naming_the_file_and_key(tmp_path, capsys, text, words):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(text)
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    status = run.main(["--encoder", str(checkpoint), "--plan", str(plan_file), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 2 and words in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_suite_named_explicitly_whose_data_lacks_a_capability_is_a_usage_error(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    status = run.main(["--encoder", str(checkpoint), "--suite", "seg", "--data", "digits", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "--suite seg" in err and "segmentation masks" in err and "digits" in err
    assert "ade20k" in err and "shapes" in err and "--data seg=SPEC" in err  # the kinds that have masks, and the fix


def test_under_all_a_suite_without_its_data_is_marked_to_skip():
    plan = _plan("--data", "digits")
    check_requirements(plan)
    assert not plan.suite("cls").unmet
    for name in ("seg", "loc", "grad"):
        assert plan.suite(name).unmet and "--data" in plan.suite(name).unmet


def test_changing_one_suites_option_leaves_the_other_suites_config_hash_alone():
    base, seg_changed = _plan(), _plan("--seg-iters", "123")
    assert base.config_hash("cls") == seg_changed.config_hash("cls")
    assert base.config_hash("seg") != seg_changed.config_hash("seg")
    cls_changed = _plan("--linear-epochs", "3")
    assert cls_changed.config_hash("loc") != base.config_hash("loc")  # loc fits its head with cls's settings
    assert cls_changed.config_hash("seg") == base.config_hash("seg")
    assert _plan("--data", "seg=shapes:n=10").config_hash("cls") == base.config_hash("cls")
    assert _plan("--workers", "0", "--note", "x").config_hash("cls") == base.config_hash("cls")  # not a number-changing setting
    assert _plan("--seed", "3").config_hash("cls") != base.config_hash("cls")


def test_plan_config_json_runs_the_same_run_again(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    first = tmp_path / "first"
    assert run.main(["--encoder", str(checkpoint), "--suite", "all", "--data", "digits:size=32", "--data", f"cls={DATA}", "--linear", "sgd",
                     "--linear-epochs", "2", "--out", str(first), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report"]) == 0
    again = tmp_path / "again"
    assert run.main(["--plan", str(first / "config.json"), "--out", str(again)]) == 0
    before = {(r.identity, r.encoder): (r.value, r.config_hash) for r in read_rows(first)}
    after = {(r.identity, r.encoder): (r.value, r.config_hash) for r in read_rows(again)}
    assert before == after and len(before) > 10
    plan = json.loads((again / "config.json").read_text())["plan"]
    assert plan["cls"]["linear"] == "sgd" and plan["suites"] == ["all"] and plan["seg"]["data"] == "digits:size=32"
    assert {r.suite for r in read_rows(again) if r.status == "skipped"} >= {"seg", "grad", "vqa"}  # skipped again, not refused


def test_the_splits_opened_before_loading_carry_the_verify_data_fingerprint(tmp_path):
    from imagesets import open_split
    from imagesets.files import set_verify_content
    from tests.imagesets.conftest import write_image

    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for k, wnid in enumerate(("n01", "n02")):
            write_image(root / split / wnid / "a.JPEG", seed=k, fmt="JPEG")
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    try:
        plan, _ = run.validate(run.parse_args(["--encoder", str(checkpoint), "--suite", "cls", "--data", f"imagenet:root={root}", "--verify-data", "--out", str(tmp_path / "run")]))
        verified = open_split(f"imagenet:root={root}", "train").fingerprint
    finally:
        set_verify_content(False)
    assert plan.opened[(f"imagenet:root={root}", "train")].fingerprint == verified != open_split(f"imagenet:root={root}", "train").fingerprint
