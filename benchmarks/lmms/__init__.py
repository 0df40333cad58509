"""lmms-eval integration: the offline shapes-world VQA task, running lmms-eval on the project's MLLMs,
and reading the result files lmms-eval writes (any model) into result rows.

Modules: ``shapes_task`` (writes the local task), ``results`` (reads ``<date>_results.json`` and the
samples files), ``cambrian`` (the 16-benchmark, 4-category map), ``model`` (the lmms-eval model of
``train.mllm``), ``runner`` (runs lmms-eval in a subprocess and judges success from its files).
"""
