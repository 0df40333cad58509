"""Every option of ``python -m train`` is one declared field with its valid range, checked before anything loads
(exit 2, one line), for the command line and library callers alike."""
import argparse

import pytest
import torch

from common.options import field_problem, options_of, problem, type_problem
from train.__main__ import build_parser
from train.__main__ import main as train_main
from train.commands import commands
from train.config import STAGE_DEFAULTS, SettingsError, StageConfig, check_world, stage_config
from train.pivot_eval import ALIGN, INSTRUCT, PivotSchedule

from .conftest import write_tiny_encoder


@pytest.fixture
def no_training(monkeypatch):
    """Record any call that would load a model or train; a refused flag must reach none of them."""
    calls = []

    def record(name):
        def fake(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was reached")
        return fake

    for target in ("train.loop.train_stage", "train.pivot_eval.pivot_eval", "train.pivot_eval.pivot_eval_lineage", "train.pivot_eval.resolve_data",
                   "train.mllm.load_mllm", "train.mllm.load_lm", "encoders.load_encoder"):
        monkeypatch.setattr(target, record(target))
    return calls


def _kept(out):
    """A stage folder holding a checkpoint and metrics from an earlier run: a refused command must keep them."""
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.pt").write_bytes(b"earlier state")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    return {path: path.read_bytes() for path in ((out / "checkpoint" / "state.pt"), (out / "metrics.jsonl"))}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


BAD_STAGE_FLAGS = [
    (["--beta", "-1"], "--beta '-1.0'", "negative beta prefers the rejected"),
    (["--beta", "0"], "--beta '0.0'", "0 trains nothing"),
    (["--max-grad-norm", "-1"], "--max-grad-norm '-1.0'", "negative norm flips"),
    (["--max-grad-norm", "0"], "--max-grad-norm '0.0'", "0 zeroes every gradient"),
    (["--warmup-ratio", "5"], "--warmup-ratio '5.0'", "skips the cosine schedule"),
    (["--warmup-ratio", "1"], "--warmup-ratio '1.0'", "must be >= 0 and < 1"),
    (["--warmup-ratio", "-0.1"], "--warmup-ratio '-0.1'", "must be >= 0 and < 1"),
    (["--weight-decay", "-0.1"], "--weight-decay '-0.1'", "a negative decay grows the weights"),
    (["--save-every", "-1"], "--save-every '-1'", "must be >= 0"),
    (["--max-bad-fraction", "-0.5"], "--max-bad-fraction '-0.5'", "even a clean file is refused"),
    (["--max-bad-fraction", "1.5"], "--max-bad-fraction '1.5'", "must be >= 0 and <= 1"),
    (["--lr", "0"], "--lr '0.0'", "0 trains nothing"),
    (["--lr", "-1e-5"], "--lr '-1e-05'", "trains backwards"),
    (["--lr", "nan"], "--lr 'nan'", "expected a finite number"),
    (["--encoder-lr", "0"], "--encoder-lr '0.0'", "freeze_encoder"),
    (["--epochs", "0"], "--epochs '0.0'", "trains nothing"),
    (["--epochs", "inf"], "--epochs 'inf'", "expected a finite number"),
    (["--global-batch", "0"], "--global-batch '0'", "must be >= 1"),
    (["--micro-batch", "0"], "--micro-batch '0'", "must be >= 1"),
    (["--micro-batch", "two"], "--micro-batch 'two'", "expected an integer"),
    (["--global-batch", "6", "--micro-batch", "4"], "global_batch = 6 (--global-batch) is not a multiple of micro_batch = 4 (--micro-batch)", "e.g. 4"),
    (["--max-length", "0"], "--max-length '0'", "every item is skipped"),
    (["--workers", "-1"], "--workers '-1'", "must be >= 0"),
    (["--seed", "-1"], "--seed '-1'", "must be >= 0 and <= 4294967295"),
    (["--sft-weight", "-0.5"], "--sft-weight '-0.5'", "trains them away"),
    (["--strategy", "zero3"], "--strategy 'zero3'", "choose from ddp, fsdp"),
]


def _states_the_fix(err: str) -> bool:
    """The refusal says what to pass: the valid range, the expected type or a value that works."""
    return any(words in err for words in ("must be ", "expected ", "; choose a global batch that is", "; choose from "))


@pytest.mark.parametrize("flags, names, cause", BAD_STAGE_FLAGS, ids=[" ".join(case[0]) for case in BAD_STAGE_FLAGS])
def test_a_stage_flag_out_of_range_is_a_usage_error_before_anything_loads(flags, names, cause, tmp_path, capsys, no_training):
    out = tmp_path / "run"
    kept = _kept(out)
    status = train_main(["stage", "--stage", "dpo", "--init", str(tmp_path / "mllm"), "--data", str(tmp_path / "p.jsonl"), "--out", str(out), *flags])
    err = _one_line_error(capsys)
    assert status == 2 and names in err and cause in err
    assert _states_the_fix(err)
    assert no_training == []
    assert {path: path.read_bytes() for path in kept} == kept


BAD_PIVOT_FLAGS = [
    (["--align-lr", "-1"], "--align-lr '-1.0'"),
    (["--instruct-lr", "0"], "--instruct-lr '0.0'"),
    (["--epochs", "0"], "--epochs '0.0'"),
    (["--micro-batch", "0"], "--micro-batch '0'"),
    (["--global-batch", "7"], "is not a multiple of micro_batch = 8"),
    (["--seed", "-2"], "--seed '-2'"),
]


@pytest.mark.parametrize("flags, names", BAD_PIVOT_FLAGS, ids=[" ".join(case[0]) for case in BAD_PIVOT_FLAGS])
def test_a_pivot_eval_flag_out_of_range_names_its_own_flag(flags, names, tmp_path, capsys, no_training):
    status = train_main(["pivot-eval", "--encoder", str(tmp_path / "e.safetensors"), "--lm", str(tmp_path / "lm"), "--data", "shapes:n=4", "--out", str(tmp_path / "pe"), *flags])
    err = _one_line_error(capsys)
    assert status == 2 and names in err and _states_the_fix(err)
    assert no_training == [] and not (tmp_path / "pe").exists()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)).choices


def test_the_parser_is_the_declared_fields():
    """Adding a flag (a training setting) is adding a field: each command's arguments are exactly the fields of
    its options classes, the stage command's settings every field of StageConfig."""
    parsers = _subparsers()
    assert set(parsers) == set(commands())
    for name, command in commands().items():
        declared = {f"{scope}.{opt.name}" for scope, cls in (("inputs", command.inputs), ("settings", command.settings)) if cls for opt in options_of(cls)}
        parsed = {action.dest for action in parsers[name]._actions if action.dest != "help"}
        assert parsed == declared, name
    stage_settings = {action.dest.split(".", 1)[1] for action in parsers["stage"]._actions if action.dest.startswith("settings.")}
    assert stage_settings == {field.name for field in StageConfig.__dataclass_fields__.values()}
    assert "--weight-decay" in parsers["stage"].format_help()


def test_every_numeric_option_declares_its_valid_values():
    checked_elsewhere = {("build", "--visual-layer")}  # a block index, checked against the loaded encoder before the LM loads
    numeric = {(name, opt.flag): opt for name, command in commands().items() for cls in (command.inputs, command.settings) if cls
               for opt in options_of(cls) if opt.item_type in (int, float)}
    assert {name for name, _ in numeric} >= {"stage", "pivot-eval", "demo", "tiny-llava", "import-mllm"}
    unchecked = {key for key, opt in numeric.items() if not (opt.spec.range_text() or opt.spec.check)}
    assert unchecked == checked_elsewhere


def test_the_pivot_schedule_defaults_are_the_stages_own():
    assert PivotSchedule().stages() == {"align": ALIGN, "instruct": INSTRUCT}
    schedule = PivotSchedule(align_lr=0.5, epochs=2.0, seed=3).stages()
    assert (schedule["align"].lr, schedule["instruct"].lr, schedule["instruct"].epochs, schedule["align"].seed) == (0.5, INSTRUCT.lr, 2.0, 3)


def test_the_new_flags_reach_the_config(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("train.loop.train_stage", lambda init, data, out, config, **kwargs: seen.append(config))
    status = train_main(["stage", "--stage", "sft", "--init", str(tmp_path), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"),
                         "--weight-decay", "0.05", "--no-reference-cache", "--freeze-encoder", "--lr", "2e-5"])
    assert status == 0 and seen == [stage_config("sft", weight_decay=0.05, cache_reference=False, freeze_encoder=True, lr=2e-5)]


def _outside(opt) -> float:
    """A value just outside the declared range of ``opt``."""
    spec = opt.spec
    for bound, step in ((spec.minimum, -1), (spec.above, 0), (spec.maximum, 1), (spec.below, 0)):
        if bound is not None:
            return int(bound + step) if opt.item_type is int else bound + step
    raise AssertionError(f"{opt.name} has no range")


RANGED = [opt for opt in options_of(StageConfig) if opt.spec.range_text()]


@pytest.mark.parametrize("opt", RANGED, ids=[opt.name for opt in RANGED])
def test_a_library_caller_is_refused_too(opt):
    bad = _outside(opt)
    assert problem(opt, bad)
    with pytest.raises(SettingsError, match=f"{opt.name} = {bad!r} \\({opt.flag}\\): must be "):
        stage_config("dpo", **{opt.name: bad})
    with pytest.raises(SettingsError, match=f"{opt.name} = nan"):
        STAGE_DEFAULTS["sft"].with_overrides(**{opt.name: float("nan")})


@pytest.mark.parametrize("settings, cause", [({"global_batch": 2.5}, "an integer"), ({"seed": True}, "an integer"), ({"lr": "1e-3"}, "a finite number"),
                                             ({"cache_reference": "no"}, "true or false"), ({"stage": "rlhf"}, "choose from align, pretrain, sft, dpo"),
                                             ({"strategy": "zero3"}, "choose from ddp, fsdp")])
def test_a_value_of_the_wrong_type_is_refused(settings, cause):
    with pytest.raises(SettingsError, match=cause):
        StageConfig(**{"stage": "sft", "lr": 1e-3, **settings})


def test_the_study_defaults_and_every_bound_hold_together():
    for config in (*STAGE_DEFAULTS.values(), ALIGN, INSTRUCT):
        assert field_problem(config) is None
    declared = {opt.name: opt for opt in options_of(StageConfig)}
    assert problem(declared["warmup_ratio"], 1.0) and not problem(declared["warmup_ratio"], 0.0)
    assert type_problem(declared["max_grad_norm"], float("inf")) == "expected a finite number"
    assert not type_problem(declared["encoder_lr"], None) and type_problem(declared["lr"], None)


def test_a_global_batch_the_processes_cannot_split_is_a_usage_error_before_loading(tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setenv("WORLD_SIZE", "3")
    status = train_main(["stage", "--stage", "sft", "--init", str(tmp_path), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"),
                         "--global-batch", "8", "--micro-batch", "4"])
    err = _one_line_error(capsys)
    assert status == 2 and "--micro-batch x processes = 4 x 3" in err and "--global-batch 12" in err
    with pytest.raises(SettingsError, match="4 x 3"):
        check_world(stage_config("sft", global_batch=8, micro_batch=4), 3)


def test_train_stage_checks_the_world_before_loading_the_model(tmp_path, monkeypatch):
    import train.loop as loop
    from train.distributed import DistContext

    monkeypatch.setattr(loop, "setup", lambda device=None: DistContext(rank=0, world=3, local_rank=0, device=torch.device("cpu")))
    monkeypatch.setattr(loop, "load_mllm", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SettingsError, match="4 x 3"):
        loop.train_stage(tmp_path, tmp_path / "d.jsonl", tmp_path / "o", stage_config("sft", global_batch=8, micro_batch=4), progress=False)


@pytest.mark.parametrize("device, cause", [("cuda", "torch sees no GPU"), ("cuda:0", "torch sees no GPU"), ("gpu", "unknown device"), ("cuda:x", "unknown device")])
def test_a_device_that_is_not_there_is_one_line(device, cause, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (["stage", "--stage", "sft", "--init", str(tmp_path), "--data", str(tmp_path / "d.jsonl")],
                    ["pivot-eval", "--encoder", str(tmp_path / "e"), "--lm", str(tmp_path), "--data", str(tmp_path)]):
        status = train_main([*command, "--out", str(tmp_path / "o"), "--device", device])
        err = _one_line_error(capsys)
        assert status == 2 and f"--device {device}" in err.replace("'", "") and cause in err
        assert "pass --device cpu" in err or "pass cpu, cuda or cuda:N" in err
    assert no_training == []


@pytest.mark.parametrize("command", [["shapes-data", "--data", "shapes:n=2"], ["demo"], ["stage", "--stage", "sft", "--init", "i", "--data", "d"]])
def test_an_out_that_is_a_file_is_one_line(command, tmp_path, capsys, no_training):
    target = tmp_path / "taken"
    target.write_text("keep me")
    for out, where in ((target, "is a file"), (target / "sub", f"lies under {target}")):
        status = train_main([*command, "--out", str(out)])
        err = _one_line_error(capsys)
        assert status == 2 and f"--out {out}" in err and where in err and "pass a folder" in err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("spec, split, cause", [("shapes:n=0", "train", "too small"), ("shapes:n=2", "bogus", "unknown split"), ("digits", "train", "no captions")])
def test_shapes_data_refuses_a_bad_spec_before_writing(spec, split, cause, tmp_path, capsys):
    status = train_main(["shapes-data", "--data", spec, "--split", split, "--out", str(tmp_path / "data")])
    err = _one_line_error(capsys)
    assert status == 2 and f"--data {spec}" in err and cause in err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("value", ["0", "-1", "17", "100000"])
def test_demo_refuses_replicates_outside_1_to_16_before_training(value, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("train.demo.make_demo_lineage", lambda *a, **k: pytest.fail("the demo trained"))
    status = train_main(["demo", "--out", str(tmp_path / "lineage"), "--replicates", value])
    err = _one_line_error(capsys)
    assert status == 2 and f"--replicates '{value}'" in err and ">= 1 and <= 16" in err and "e.g. --replicates 3" in err
    assert not (tmp_path / "lineage").exists()


def test_build_checks_the_visual_layer_before_loading_the_lm(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("train.mllm.load_lm", lambda *a, **k: pytest.fail("the LM was loaded"))
    encoder = write_tiny_encoder(tmp_path / "e.safetensors")
    status = train_main(["build", "--encoder", str(encoder), "--lm", str(tmp_path / "lm"), "--out", str(tmp_path / "m"), "--visual-layer", "9"])
    err = _one_line_error(capsys)
    assert status == 2 and "--visual-layer 9" in err and "3 blocks" in err and not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv, words", [
    (["import-mllm", "SRC", "OUT", "--check-tolerance", "-1"], "--check-tolerance '-1.0': must be >= 0 (the largest accepted |logit difference|"),
    (["export-mllm", "SRC", "OUT", "--check-tolerance", "inf"], "--check-tolerance 'inf': expected a finite number"),
    (["tiny-llava", "OUT", "--image-size", "40"], "--image-size '40': the tiny tower's patches are 16 px"),
])
def test_the_mllm_transfer_commands_check_their_numbers_first(argv, words, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("SRC", "OUT") else a for a in argv]
    assert train_main(argv) == 2
    assert words in _one_line_error(capsys) and not (tmp_path / "OUT").exists()
