"""End to end: the suites tell a known-worse encoder from the original, and do not call seed noise an effect.

Five tiny ViTs are pretrained on the shapes world with the demo's recipe at a few seconds each (seeds
0-4). Seed 0 is the original. Its ``token_shuffle`` control (``encoders.controls``: every patch token
computes what it did, only its place on the grid is wrong) must be flagged significantly worse by ``loc``
and ``seg``. Seeds 1-2 and 3-4 are two arms of one and the same recipe (a seed-only retraining, labelled
+SFT and +PIVOT so the report compares them): the replicate-aware verdict must not call either better.
The gradient suite's control needs an MLLM that looks at the image, which takes minutes to train: it is
measured by ``python -m benchmarks.demo --replicates 2 --control`` (docs/protocol.md, controls).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run
from encoders import make_token_shuffled
from reports.compare import lineage_analysis
from reports.load import PerItemCache, load_runs
from train.vit_pretrain import VitPretrainConfig, pretrain_vit

PRETRAIN = dict(options={"img_size": 64, "embed_dim": 48, "depth": 2, "num_heads": 2}, data="shapes:n=600:n_val=20:seed=3", epochs=6)
DATA = "shapes:n=200:n_val=100:seed=0:size=64"
SUITE_OPTIONS = ["--seg-protocols", "fast_linear", "--seg-head-epochs", "40", "--seg-min-steps", "0", "--loc-figure-images", "0"]
ARMS = {"sft": (1, 2), "pivot": (3, 4)}


def _entry(name: str, checkpoint: str, role: str, base: str = "", replicate: int | None = None) -> str:
    lines = [f'[[encoder]]\nname = "{name}"\ncheckpoint = "{checkpoint}"\nrole = "{role}"']
    lines += [f'base = "{base}"'] if base else []
    lines += [f"replicate = {replicate}"] if replicate is not None else []
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def control_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("controls")
    for seed in range(5):
        pretrain_vit(folder / f"vit{seed}.safetensors", VitPretrainConfig(seed=seed, **PRETRAIN), log=lambda _: None, progress=False)
    make_token_shuffled(folder / "vit0.safetensors", folder / "shuffled.safetensors", seed=0)
    entries = [_entry("orig", "vit0.safetensors", "original"), _entry("shuffled", "shuffled.safetensors", "positive-control", base="orig")]
    entries += [_entry(f"{role}{i}", f"vit{seed}.safetensors", role, base="orig", replicate=i) for role, seeds in ARMS.items() for i, seed in enumerate(seeds)]
    manifest = folder / "lineage.toml"
    manifest.write_text("\n".join(entries))
    out = folder / "run"
    status = run.main(["--encoders", str(manifest), "--suite", "loc,seg", "--data", DATA, "--out", str(out), "--cache-dir", str(folder / "cache"),
                       "--workers", "0", "--no-report", *SUITE_OPTIONS])
    assert status == 0
    return out


def _verdicts(run_dir: Path):
    data = load_runs([run_dir])
    (lineage,) = data.lineages
    _, verdicts, _, _ = lineage_analysis(lineage, PerItemCache(), headlines=data.headlines())
    return {verdict.line.suite: verdict for verdict in verdicts}


@pytest.mark.parametrize("suite", ["loc", "seg"])
def test_the_token_shuffled_original_is_flagged_significantly_worse(control_run, suite):
    verdict = _verdicts(control_run)[suite]
    cells = {name: cell for _, name, cell in verdict.entries}
    original, shuffled = cells["orig"], cells["shuffled"]
    assert not original.degenerate, f"the original must measure something before its control can fall: {original.degenerate}"
    assert shuffled.significant and shuffled.better is False, (verdict.line.metric, shuffled.delta, shuffled.p_adjusted, shuffled.note)


@pytest.mark.parametrize("suite", ["loc", "seg"])
def test_a_seed_only_retraining_is_not_flagged(control_run, suite):
    verdict = _verdicts(control_run)[suite]
    null = verdict.pivot_vs_sft
    assert null is not None and null.k == 2 and null.p_adjusted is not None, null
    assert not null.significant, (verdict.line.metric, null.delta, null.p_adjusted, null.note)
