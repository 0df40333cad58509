"""The Cambrian protocol: 16 VQA benchmarks in 4 categories, by their lmms-eval task names and metric keys.

Each benchmark lists the (task, metric, scale) pairs that report it, preferred first: lmms-eval 0.7.3's
names, then older spellings (earlier lmms-eval releases wrote MME's perception score as
``mme_percetion_score``, and MathVista testmini as one task with ``gpt_eval_score``). ``scale`` turns
lmms-eval's value into points on 0..100: fractions x100, MMBench's and MathVista's GPT/judge scores are
already percentages, MME's perception score (0..2000, summed over its 10 subtasks) is divided by 20.
Overall = mean of the 4 category means (docs/protocol.md, "VQA").
"""
from __future__ import annotations

from dataclasses import dataclass

GENERAL, KNOWLEDGE, OCR_CHART, VISION_CENTRIC = "General", "Knowledge", "OCR & Chart", "Vision-centric"
CATEGORIES = (GENERAL, KNOWLEDGE, OCR_CHART, VISION_CENTRIC)
OVERALL = "overall"


@dataclass(frozen=True)
class Source:
    task: str
    metric: str
    scale: float


@dataclass(frozen=True)
class Benchmark:
    """One Cambrian benchmark; ``sources[0]`` is what ``--suite vqa`` asks lmms-eval 0.7.3 to run."""

    name: str
    category: str
    sources: tuple[Source, ...]

    @property
    def task(self) -> str:
        return self.sources[0].task


def _b(name: str, category: str, *sources: tuple[str, str, float]) -> Benchmark:
    return Benchmark(name, category, tuple(Source(*source) for source in sources))


BENCHMARKS: tuple[Benchmark, ...] = (
    _b("MME", GENERAL, ("mme", "mme_perception_score", 1 / 20), ("mme", "mme_percetion_score", 1 / 20)),
    _b("MMBench (en dev)", GENERAL, ("mmbench_en_dev", "gpt_eval_score", 1.0)),
    _b("SEED-Bench", GENERAL, ("seedbench", "seed_image", 100.0)),
    _b("GQA", GENERAL, ("gqa", "exact_match", 100.0)),
    _b("ScienceQA-IMG", KNOWLEDGE, ("scienceqa_img", "exact_match", 100.0)),
    _b("MMMU (val)", KNOWLEDGE, ("mmmu_val", "mmmu_acc", 100.0)),
    _b("MathVista (testmini)", KNOWLEDGE, ("mathvista_testmini_format", "llm_as_judge_eval", 1.0),
       ("mathvista_testmini", "gpt_eval_score", 1.0), ("mathvista_testmini", "llm_as_judge_eval", 1.0)),
    _b("AI2D", KNOWLEDGE, ("ai2d", "exact_match", 100.0)),
    _b("ChartQA", OCR_CHART, ("chartqa", "relaxed_overall", 100.0)),
    _b("OCRBench", OCR_CHART, ("ocrbench", "ocrbench_accuracy", 100.0)),
    _b("TextVQA (val)", OCR_CHART, ("textvqa_val", "exact_match", 100.0)),
    _b("DocVQA (val)", OCR_CHART, ("docvqa_val", "anls", 100.0)),
    _b("MMVP", VISION_CENTRIC, ("mmvp", "mmvp_accuracy", 100.0)),
    _b("RealWorldQA", VISION_CENTRIC, ("realworldqa", "exact_match", 100.0)),
    _b("CV-Bench 2D", VISION_CENTRIC, ("cv_bench_2d", "cv_bench_acc", 100.0)),
    _b("CV-Bench 3D", VISION_CENTRIC, ("cv_bench_3d", "cv_bench_acc", 100.0)),
)

CAMBRIAN_TASKS = tuple(benchmark.task for benchmark in BENCHMARKS)
"""The default ``--vqa-tasks``: lmms-eval 0.7.3 task names of the 16 benchmarks."""

# Tasks outside the Cambrian map whose metric is known to be a fraction (reported x100 as points).
KNOWN_FRACTIONS = {("shapes_vqa", "exact_match"), ("shapes_vqa_mc", "acc"), ("shapes_vqa_mc", "acc_norm")}


def benchmark_of(task: str) -> Benchmark | None:
    """The Cambrian benchmark that lmms-eval task ``task`` reports, or None."""
    for benchmark in BENCHMARKS:
        if any(source.task == task for source in benchmark.sources):
            return benchmark
    return None
