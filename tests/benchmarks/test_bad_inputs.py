"""A battery of bad command lines and specs for ``benchmarks.run``: each is refused before any model
loads with one line naming the flag (or file) and the fix (in the line, or on a ``fix:`` line after it),
exit status 2, no traceback, and the results already in ``--out`` untouched. Every suite's options are
checked whatever ``--suite`` says."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run
from benchmarks.results import read_frame
from common.options import join_negative_values
from tests.benchmarks.conftest import write_tiny_checkpoint

DATA = "shapes:n=60:n_val=20:seed=0:size=32"
PREVIOUS = '{"computed": "earlier results that must survive"}\n'


@pytest.fixture
def setup(tmp_path):
    """A tiny checkpoint and an --out that already holds computed results."""
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text(PREVIOUS)
    return checkpoint, out


def _main(tmp_path, checkpoint, out, *args, data=DATA, encoder=True):
    argv = ["--data", data, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report"]
    if encoder:
        argv += ["--encoder", str(checkpoint)]
    return run.main(argv + list(args))


def _assert_refused(capsys, out, status: int, *needles: str) -> str:
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert status == 2, f"exit status {status}, stderr: {error}"
    lines = error.splitlines()  # one line, and a "fix:" line when the fix is not in it
    assert lines[0].startswith("benchmarks.run: error: ") and (len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  fix: "))), error
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in error, f"{needle!r} not in {error!r}"
    # Nothing computed is lost: the earlier results file is neither replaced nor renamed.
    assert (out / "results.jsonl").read_text() == PREVIOUS
    assert not list(out.glob("results.*.previous.jsonl"))
    return error


CASES = [
    # (id, extra args, words the one-line error must contain: the flag and the fix)
    ("unknown-suite", ["--suite", "nope"], ["--suite", "nope", "choose all or"]),
    ("empty-suite", ["--suite", ","], ["--suite", "empty"]),
    ("unknown-suite-in-repeat", ["--suite", "cls", "--suite", "sge"], ["--suite", "sge"]),
    ("layers-not-numbers", ["--layers", "a,b"], ["--layers", "-1,-2,-4"]),
    ("layers-half-numbers", ["--layers", "1,x"], ["--layers", "'all'"]),
    ("layers-empty-list", ["--layers", ","], ["--layers", "no block index"]),
    ("batch-size-zero", ["--batch-size", "0"], ["--batch-size", ">= 1"]),
    ("workers-negative", ["--workers", "-1"], ["--workers", ">= 0"]),
    ("linear-epochs-zero", ["--linear-epochs", "0"], ["--linear-epochs", ">= 1"]),
    ("device-unknown", ["--device", "potato"], ["--device", "cpu, cuda"]),
    ("arch-unknown-family", ["--arch", "nofamily:vit"], ["--arch", "nofamily", "families"]),
]


@pytest.mark.parametrize("args,needles", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_flag_is_refused_before_loading(tmp_path, setup, capsys, args, needles):
    checkpoint, out = setup
    status = _main(tmp_path, checkpoint, out, *args)
    _assert_refused(capsys, out, status, *needles)


DATA_CASES = [
    ("unknown-kind", "nosuch", ["--data", "nosuch"]),
    ("bad-number", "shapes:n=abc", ["--data", "n"]),
    ("unknown-key", "shapes:bogus=1", ["--data", "bogus", "valid keys"]),
    ("missing-root", "imagenet", ["--data", "root"]),
    ("root-does-not-exist", "imagenet:root=/nonexistent/imagenet", ["--data", "/nonexistent/imagenet", "does not exist"]),
    ("empty-spec", " ", ["--data"]),
]


@pytest.mark.parametrize("spec,needles", [(c[1], c[2]) for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_spec_is_refused(tmp_path, setup, capsys, spec, needles):
    checkpoint, out = setup
    status = _main(tmp_path, checkpoint, out, data=spec)
    _assert_refused(capsys, out, status, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_gpu(tmp_path, setup, capsys):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--device", "cuda"), "--device cuda", "no CUDA GPU", "--device cpu")


def test_device_index_beyond_count(tmp_path, setup, capsys):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--device", "cuda:99"), "--device cuda:99")


def test_out_is_a_file(tmp_path, setup, capsys):
    checkpoint, out = setup
    target = tmp_path / "a_file"
    target.write_text("mine")
    status = _main(tmp_path, checkpoint, target)
    error = capsys.readouterr().err
    assert status == 2 and "--out" in error and "is a file" in error and "pass a directory" in error
    assert target.read_text() == "mine"


def test_out_below_a_file(tmp_path, setup, capsys):
    checkpoint, _ = setup
    (tmp_path / "f").write_text("x")
    status = _main(tmp_path, checkpoint, tmp_path / "f" / "run")
    error = capsys.readouterr().err
    assert status == 2 and "--out" in error and "is a file" in error


def test_cache_dir_is_a_file(tmp_path, setup, capsys):
    checkpoint, out = setup
    (tmp_path / "cache").write_text("x")
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out), "--cache-dir", "pass a directory")


def test_missing_encoder_file(tmp_path, setup, capsys):
    _, out = setup
    _assert_refused(capsys, out, _main(tmp_path, tmp_path / "nope.pt", out), "--encoder", "nope.pt", "no such file")


def test_no_encoder_at_all(tmp_path, setup, capsys):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, encoder=False), "no encoder", "--encoder PATH")


def test_two_encoders_with_one_name(tmp_path, setup, capsys):
    checkpoint, out = setup
    other = write_tiny_checkpoint(tmp_path / "other" / "enc.safetensors", seed=1)
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--encoder", str(other)), "['enc']", "--encoders")


def test_missing_manifest(tmp_path, setup, capsys):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--encoders", str(tmp_path / "none.toml"), encoder=False),
                    "--encoders", "none.toml", "not found")


def test_bad_manifest_through_the_cli(tmp_path, setup, capsys):
    checkpoint, out = setup
    manifest = tmp_path / "lineage.toml"
    manifest.write_text(f'[[encoder]]\nname = "a"\ncheckpoint = "{checkpoint}"\nbase = "b"\n\n'
                        f'[[encoder]]\nname = "b"\ncheckpoint = "{checkpoint}"\nbase = "a"\n')
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--encoders", str(manifest), encoder=False),
                    "lineage.toml", "base cycle", "a -> b -> a")


def test_second_run_on_one_out_is_refused(tmp_path, setup, capsys):
    from filelock import FileLock

    checkpoint, out = setup
    with FileLock(str(out / ".run.lock")):
        status = _main(tmp_path, checkpoint, out)
    _assert_refused(capsys, out, status, "--out", "another benchmarks.run", "another --out")


def test_layers_out_of_range_is_refused_before_any_feature(tmp_path, setup, capsys):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--layers", "7"), "--layers", "out of range", "2 blocks")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_negative_layers_as_the_readme_writes_them(tmp_path):
    flags = ["--layers", "--loc-layers"]
    assert join_negative_values(["--layers", "-1,-2", "--seed", "1"], flags) == ["--layers=-1,-2", "--seed", "1"]
    assert join_negative_values(["--layers", "-1"], flags) == ["--layers=-1"]
    assert join_negative_values(["--layers", "--seed"], flags) == ["--layers", "--seed"]
    args = run.parse_args(["--encoder", "x", "--layers", "-1,-2", "--loc-layers", "-1"])
    assert vars(args)["cls.layers"] == "-1,-2" and vars(args)["loc.layers"] == "-1"


def test_repeated_suite_merges_and_layers_run(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "enc.safetensors")
    out = tmp_path / "run"
    status = run.main(["--encoder", str(checkpoint), "--data", DATA, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                       "--workers", "0", "--no-report", "--linear-epochs", "1", "--suite", "seg", "--suite", "cls", "--layers", "-1,-2",
                       "--seg-protocols", "patch_probe", "--seg-epochs", "1", "--seg-min-steps", "0", "--seg-seeds", "1"])
    assert status == 0
    frame = read_frame(out)
    assert set(frame.suite) == {"seg", "cls"}  # both kept, not the last one only
    assert json.loads((out / "config.json").read_text())["plan"]["suites"] == ["seg", "cls"]
    top1 = frame[(frame.metric == "top1") & (frame.task == "linear")]
    labels = {(e.get("layer"), e["layer_label"]) for e in top1.extra}
    assert labels == {(None, "last"), (0, "-2"), (1, "-1")}
    assert {e["n_classes"] for e in top1.extra} == {10} and {e["chance"] for e in top1.extra} == {10.0}
    top5 = frame[frame.metric == "top5"]
    assert top5.ci_low.notna().all() and (top5.ci_low <= top5.value).all() and (top5.per_item != "").all()
    log = (out / "run.log").read_text()
    assert "loaded enc" in log


def test_dataset_without_a_val_split_is_refused_for_cls(tmp_path, setup, capsys):
    from tests.imagesets.conftest import write_image

    checkpoint, out = setup
    root = tmp_path / "imagenet"
    write_image(root / "train" / "n01" / "a.JPEG", fmt="JPEG")
    status = _main(tmp_path, checkpoint, out, "--suite", "cls", data=f"imagenet:root={root}")
    _assert_refused(capsys, out, status, "--data", "no val split", "add the missing split folder")


def test_negative_seed_is_refused(tmp_path, setup, capsys):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--seed", "-3"), "--seed", ">= 0")


def test_cache_dir_below_a_file_is_refused(tmp_path, setup, capsys):
    checkpoint, out = setup
    (tmp_path / "plain").write_text("x")
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--cache-dir", str(tmp_path / "plain" / "cache")),
                    "--cache-dir", "cannot create it", "writable directory")


# ------------------------------------------------------------------ every suite option, whatever --suite says

# A value each text option refuses (its type cannot say it): every str option without choices needs one here.
BAD_TEXT = {"--layers": "x,y", "--align-lm": "/nonexistent/lm", "--vqa-results": "/nonexistent/results", "--vqa-tasks": "bogus_task",
            "--seg-mmseg-lr": "0"}


def _bad_values(opt) -> list[str]:
    """Values of ``opt`` that must be refused, as the flag's text (a bool flag takes none: see the plan test)."""
    if opt.type is bool:
        return []
    values = [BAD_TEXT[opt.flag]] if opt.flag in BAD_TEXT else []
    if opt.item_type in (int, float):
        values.append("abc")
    if opt.spec.choices:
        values.append("bogus")
    if opt.spec.minimum is not None:
        values.append(str(opt.spec.minimum - 1))
    if opt.spec.maximum is not None:
        values.append(str(opt.spec.maximum + 1))
    if opt.is_list:
        values.append("")  # an empty list would run nothing, silently
    return values


def _suite_options():
    from benchmarks.suites import suite_specs
    from common.options import options_of

    return [(spec.name, opt) for spec in suite_specs() for opt in options_of(spec.options, spec.flag_prefix)]


SUITE_CASES = [(owner, opt.flag, value) for owner, opt in _suite_options() for value in _bad_values(opt)]


def test_every_suite_option_has_values_that_must_be_refused():
    for owner, opt in _suite_options():
        if opt.type is not bool:
            assert _bad_values(opt), f"{opt.flag} ({owner}): add a value it refuses to BAD_TEXT"
        if opt.item_type is str and not opt.spec.choices:
            assert opt.flag in BAD_TEXT, f"{opt.flag} ({owner}): a text option needs a declared check and a bad value in BAD_TEXT"


@pytest.fixture
def no_load(monkeypatch):
    monkeypatch.setattr(run, "load_run_encoder", lambda *a, **k: pytest.fail("an encoder was loaded"))


@pytest.mark.parametrize("owner, flag, value", SUITE_CASES, ids=[f"{flag}={value}" for _, flag, value in SUITE_CASES])
def test_a_bad_suite_option_is_refused_whatever_suite_runs(tmp_path, setup, capsys, no_load, owner, flag, value):
    checkpoint, out = setup
    for suite in (owner, "vqa" if owner != "vqa" else "cls"):  # its own suite, and one that does not use it
        status = _main(tmp_path, checkpoint, out, "--suite", suite, f"{flag}={value}")
        _assert_refused(capsys, out, status, f"{flag} ")


@pytest.mark.parametrize("owner, name, value", [(owner, opt.name, "maybe" if opt.type is bool else _bad_values(opt)[0]) for owner, opt in _suite_options()])
def test_a_bad_plan_value_of_a_suite_that_does_not_run_is_refused(tmp_path, setup, capsys, no_load, owner, name, value):
    checkpoint, out = setup
    plan = tmp_path / "plan.toml"
    other = "vqa" if owner != "vqa" else "cls"
    plan.write_text(f'suites = ["{other}"]\n[{owner}]\n{name} = {json.dumps(value) if value else "[]"}\n')
    status = _main(tmp_path, checkpoint, out, "--plan", str(plan))
    _assert_refused(capsys, out, status, f"--plan {plan} [{owner}] {name} =")


def test_a_value_for_a_suite_that_does_not_run_is_named_on_stderr(tmp_path, setup, capsys):
    checkpoint, out = setup
    target = tmp_path / "a_file"
    target.write_text("x")
    status = _main(tmp_path, checkpoint, target, "--suite", "cls", "--loc-items", "5", "--seg-iters", "9", "--linear-epochs", "2", "--data", "seg=digits")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and lines[-1].startswith("benchmarks.run: error: --out")
    assert lines[:-1] == ["benchmarks.run: warning: --seg-iters is set but seg does not run", "benchmarks.run: warning: --data seg=... is set but seg does not run",
                          "benchmarks.run: warning: --loc-items is set but loc does not run"]  # in suite order; --linear-epochs: cls runs
    status = _main(tmp_path, checkpoint, target, "--suite", "loc", "--linear-epochs", "2")
    assert "warning" not in capsys.readouterr().err  # loc fits its head with cls's options: they are used


@pytest.mark.parametrize("data, words", [("seg=nosuch", "unknown dataset kind 'nosuch'"), ("seg=shapes:n=abc", "n='abc'")])
def test_a_bad_dataset_for_a_suite_that_does_not_run_is_refused(tmp_path, setup, capsys, no_load, data, words):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--suite", "cls", "--data", data), "--data seg=", words)


def test_a_seed_beyond_what_torch_takes_is_one_line(tmp_path, setup, capsys, no_load):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--seed", "99999999999999999999999"), "--seed", "must be >= 0 and <= 9223372036854775807")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the no-MPS message")
def test_device_mps_without_mps(tmp_path, setup, capsys, no_load):
    checkpoint, out = setup
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--device", "mps"), "--device mps", "no usable MPS device", "--device cpu")


def test_a_set_variable_no_plan_value_uses(tmp_path, setup, capsys, no_load):
    checkpoint, out = setup
    plan = tmp_path / "plan.toml"
    plan.write_text('[cls]\ndata = "imagenet:root=${imagenet_root}"\n[seg]\ndata = "ade20k:root=${ade20k_root}"\n')
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--plan", str(plan), "--set", "imagenet_rot=/data"),
                    "--set imagenet_rot", "uses no ${imagenet_rot}", "its variables: ade20k_root, imagenet_root")
    _assert_refused(capsys, out, _main(tmp_path, checkpoint, out, "--set", "imagenet_root=/data"), "--set imagenet_root", "no --plan is given")
