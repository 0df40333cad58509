import json

import pytest
import torch

from encoders import load_encoder
from train.config import stage_config
from train.loop import TrainingError, train_stage
from train.mllm import load_mllm

FAST = {"global_batch": 8, "micro_batch": 4, "epochs": 1.0, "save_every": 0, "lr": 1e-2}


def _encoder_state(mllm_dir):
    return load_encoder(mllm_dir / "encoder.safetensors").model.state_dict()


def _changed(before, after):
    return [key for key in before if not torch.equal(before[key], after[key])]


@pytest.mark.parametrize("stage", ["align", "pretrain", "sft", "dpo"])
def test_gradients_reach_the_encoder_except_in_align(stage, tiny_mllm_dir, shapes_files, tmp_path):
    data = shapes_files["captions" if stage == "align" else "preferences"]
    result = train_stage(tiny_mllm_dir, data, tmp_path / stage, stage_config(stage, **FAST, encoder_lr=1e-2), progress=False)
    before, after = _encoder_state(tiny_mllm_dir), _encoder_state(result.mllm_dir)
    changed = _changed(before, after)
    start, end = load_mllm(tiny_mllm_dir), load_mllm(result.mllm_dir)
    assert not torch.equal(start.projector.fc1.weight, end.projector.fc1.weight)
    if stage == "align":
        assert changed == []
        assert all(torch.equal(a, b) for a, b in zip(start.lm.parameters(), end.lm.parameters()))
    else:
        assert any(key.startswith("blocks.0.") for key in changed)
        # the last block and the final norm cannot reach penultimate-block tokens: frozen, untouched
        assert not any(key.startswith(("blocks.2.", "norm.")) for key in changed)
    metrics = [json.loads(line) for line in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(m["loss"] > 0 for m in metrics)
    if stage == "dpo":
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(metrics[0])
        assert metrics[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # first step: policy == reference


def test_reference_cache_gives_the_same_training_as_a_live_reference(tiny_mllm_dir, shapes_files, tmp_path):
    cached = train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "cached", stage_config("dpo", **FAST), progress=False)
    live = train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "live", stage_config("dpo", **FAST, cache_reference=False), progress=False)
    a, b = load_mllm(cached.mllm_dir).state_dict(), load_mllm(live.mllm_dir).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_killed_run_resumes_to_the_same_weights(tiny_mllm_dir, shapes_files, tmp_path):
    config = stage_config("sft", global_batch=4, micro_batch=2, epochs=1.5, save_every=2, lr=1e-2)
    full = train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "full", config, progress=False)
    assert full.steps > 5
    # killed after step 3: the checkpoint of step 2 is on disk, step 3 is lost and must be redone
    assert train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "killed", config, progress=False, stop_after_steps=3) is None
    assert json.loads((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
    resumed = train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "killed", config, progress=False, resume=True)
    a, b = load_mllm(full.mllm_dir).state_dict(), load_mllm(resumed.mllm_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished stage is reused, not retrained
    again = train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "killed", config, progress=False)
    assert again.summary["steps"] == resumed.steps


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_mllm_dir, shapes_files, tmp_path, monkeypatch):
    import train.loop as loop

    config = stage_config("sft", global_batch=4, micro_batch=2, epochs=1.0, save_every=1, lr=1e-2)
    original = loop.sft_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls["n"] > 4 else value  # micro-batch 5 = step 2

    monkeypatch.setattr(loop, "sft_loss", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2 \(items at lines \[\d+, \d+\]"):
        train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "nan", config, progress=False)
    state = torch.load(tmp_path / "nan" / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 2 and not (tmp_path / "nan" / "mllm").exists()


def test_settings_that_cannot_work_are_refused(tiny_mllm_dir, shapes_files, tmp_path):
    from train.config import SettingsError

    with pytest.raises(SettingsError, match="not a multiple of micro_batch"):
        train_stage(tiny_mllm_dir, shapes_files["preferences"], tmp_path / "a", stage_config("sft", global_batch=6, micro_batch=4), progress=False)
    from train.data import DataError

    with pytest.raises(DataError, match="needs preference items"):
        train_stage(tiny_mllm_dir, shapes_files["captions"], tmp_path / "b", stage_config("dpo", **FAST), progress=False)


@pytest.mark.parametrize("stage,overrides", [("align", {}), ("pretrain", {"freeze_encoder": True})], ids=["align", "frozen-pretrain"])
def test_a_frozen_encoder_is_run_once_per_image_with_the_same_training(stage, overrides, tiny_mllm_dir, shapes_files, tmp_path, monkeypatch):
    import train.loop as loop

    data = shapes_files["captions" if stage == "align" else "preferences"]
    config = stage_config(stage, **FAST, **overrides)
    messages = []
    cached = train_stage(tiny_mllm_dir, data, tmp_path / "cached", config, progress=False, log=messages.append)
    assert any("computed once" in message for message in messages)
    monkeypatch.setattr(loop, "FROZEN_CACHE_BYTES", 0)  # too small for any token: every step encodes its images
    messages.clear()
    every_step = train_stage(tiny_mllm_dir, data, tmp_path / "every-step", config, progress=False, log=messages.append)
    assert not any("computed once" in message for message in messages)
    a, b = load_mllm(cached.mllm_dir).state_dict(), load_mllm(every_step.mllm_dir).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert _changed(_encoder_state(tiny_mllm_dir), _encoder_state(cached.mllm_dir)) == []
