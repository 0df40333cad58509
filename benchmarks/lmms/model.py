"""The lmms-eval model for this project's MLLMs (``train.mllm``): ``--model vee_mllm --model_args pretrained=DIR``.

Registered through the ``lmms_eval.models`` entry-point group (setup.cfg: ``vee_mllm =
benchmarks.lmms.model:manifest``); lmms-eval's own registry (``ModelRegistryV2``) loads the manifest.

* ``generate_until``: greedy answers (``MLLM.generate``), batched; stop strings cut the text.
* ``loglikelihood``: the *loss* of the continuation as the assistant's answer, followed by the end-of-turn
  token (the answer is complete there): its mean negative log-probability per token (nats), batched;
  ``is_greedy`` is whether every one of those tokens is the argmax. A loss, not a log-probability:
  lmms-eval's ``multiple_choice`` scoring takes the choice with the *smallest* value (``argmin``), and
  its own models (llava, cambrian, ...) return the language model's mean cross-entropy.
* ``generate_until_multi_round``: one document at a time; rounds come from the task's ``doc_to_text``
  (``previous_output``, ``round_idx``, ``previous_round_info``) until it signals the end, as lmms-eval's
  LLaVA-OneVision model does.

The MLLMs take exactly one image per question: a document with several images is answered about the
first (counted and logged), one without an image is an error naming the task and document.

``dtype=bf16|fp16|fp32`` (model_args, default fp32) casts the tower, the projector and the LM when they load
(``train.mllm.load_mllm``); images are cast to it too. ``device_map`` is refused: the MLLM loads whole onto
one device, so a model larger than one GPU cannot be split here (use ``dtype=bf16``).

Several processes (``accelerate launch --num_processes N -m lmms_eval ...``; on CPU with
``ACCELERATE_USE_CPU=1`` and ``--multi_gpu``, which starts N torchrun workers on gloo): lmms-eval's evaluator
gives each process its shard of the documents (``rank``/``world_size``) and gathers the per-document results
on rank 0. Each process loads the whole MLLM onto its own device (``cuda:<local rank>`` on GPUs).

``blind=true`` (model_args) is the vision-disabled control (Cambrian-1's benchmark analysis): every image
is replaced by one constant image, the encoder's preprocessing mean colour at its input size, so the
answers can only come from the question. Documents are still checked as above.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from loguru import logger

MODEL_ID = "vee_mllm"
CLASS_PATH = "benchmarks.lmms.model.ProjectMLLM"
DEFAULT_MAX_NEW_TOKENS = 32
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def manifest() -> ModelManifest:
    """The entry-point payload: model id ``vee_mllm`` -> :class:`ProjectMLLM` (a simple lmms-eval model)."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def _flag(name: str, value: Any) -> bool:
    """A boolean model_arg as lmms-eval passes it (already a bool, or the text after ``name=``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"vee_mllm: --model_args {name}={value!r} is not true or false; write {name}=true or {name}=false")


def parse_dtype(value: Any) -> torch.dtype:
    """The ``dtype=`` model_arg (``bf16``, ``fp16`` or ``fp32``) as a torch dtype."""
    name = str(value).strip().lower()
    if name not in DTYPES:
        raise ValueError(f"vee_mllm: --model_args dtype={value!r} is not one of {', '.join(DTYPES)}; write e.g. dtype=bf16")
    return DTYPES[name]


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ProjectMLLM(lmms):
    """An MLLM directory (``train.mllm.load_mllm``) as an lmms-eval model."""

    is_simple = True

    def __init__(self, pretrained: str = "", device: str | None = None, batch_size: int | str = 16, max_new_tokens: int | str = DEFAULT_MAX_NEW_TOKENS,
                 blind: bool | str = False, dtype: str = "fp32", device_map: str | None = None, **unused: Any) -> None:
        super().__init__()
        if not pretrained:
            raise ValueError("vee_mllm needs --model_args pretrained=DIR (an MLLM directory: python -m train's, a transformers Llava or a LLaVA-NeXT checkpoint)")
        if device_map not in (None, ""):
            raise ValueError(f"vee_mllm: --model_args device_map={device_map!r} is not supported (the MLLM loads whole onto one device); "
                             "drop it and use dtype=bf16, with one process per GPU under accelerate launch")
        from train.mllm import load_mllm

        self.blind = _flag("blind", blind)
        self.dtype = parse_dtype(dtype)
        unused = {k: v for k, v in unused.items() if v is not None and k != "max_batch_size"}
        if unused:
            logger.warning(f"vee_mllm ignores model_args {sorted(unused)}")
        self.path = str(pretrained)
        # lmms-eval's own models keep an Accelerator: its state says which process this is under accelerate launch / torchrun.
        self.accelerator = Accelerator()
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.mllm = load_mllm(pretrained, device=self._process_device(device), dtype=self.dtype)
        self.transform = self.mllm.image_transform()
        self.batch_size = max(1, int(batch_size) if str(batch_size).isdigit() else 16)
        self.max_new_tokens = int(max_new_tokens)
        self.extra_images = 0
        self._constant = self._mean_image() if self.blind else None
        if self.blind:
            logger.info(f"vee_mllm: blind=true, every image of {self.path} is replaced by its encoder's mean colour")

    def _process_device(self, requested: str | None) -> torch.device:
        """This process's device: with several processes, the accelerator's (``cuda:<local rank>`` on GPUs)
        unless another device type was asked for; with one, ``requested`` (default cpu)."""
        if self._world_size > 1 and (requested is None or torch.device(requested).type == self.accelerator.device.type):
            return self.accelerator.device
        return torch.device(requested or "cpu")

    @property
    def device(self) -> torch.device:
        """Where the MLLM is (lmms-eval's evaluator puts its per-rank request counts there)."""
        return self.mllm.device

    def _mean_image(self) -> torch.Tensor:
        """The blind control's input: the MLLM's input mean colour, as an RGB image at its input size."""
        from PIL import Image

        preprocess = self.mllm.preprocess
        colour = tuple(int(round(255 * channel)) for channel in preprocess.mean)
        return self.transform(Image.new("RGB", (preprocess.resolution, preprocess.resolution), colour))

    def _pixels(self, image: Any) -> torch.Tensor:
        """A PIL image as the encoder's input tensor (3, R, R); the constant mean image when blind."""
        return self._constant.clone() if self._constant is not None else self.transform(image.convert("RGB"))

    # -- inputs ------------------------------------------------------------------------------------------
    def _image(self, doc_to_visual: Callable, doc_id: int, task: str, split: str) -> torch.Tensor:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else None
        visuals = [v for v in (visuals or []) if v is not None]
        if not visuals:
            raise ValueError(f"{task} document {doc_id} has no image; vee_mllm answers questions about exactly one image")
        if len(visuals) > 1:
            self.extra_images += len(visuals) - 1
            logger.warning(f"{task} document {doc_id}: {len(visuals)} images, answering about the first ({self.extra_images} ignored so far)")
        if isinstance(visuals[0], str):
            raise ValueError(f"{task} document {doc_id}: a video or file path ({visuals[0]!r}); vee_mllm takes images only")
        return self._pixels(visuals[0])

    def _images(self, rows: list[tuple]) -> torch.Tensor:
        return torch.stack([self._image(*row) for row in rows]).to(self.mllm.device, self.dtype)

    @staticmethod
    def _question(context: Any) -> str:
        text = context[0] if isinstance(context, list) else str(context)
        from train.mllm import IMAGE_TOKEN

        return text.replace(IMAGE_TOKEN, "").strip()  # the MLLM's chat prompt places the image itself

    # -- lmms-eval API -----------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, ``batch_size`` requests at a time (one task's generation settings per batch)."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            context, gen_kwargs, _, _, task, split = request.args
            groups.setdefault((task, split, repr(sorted(gen_kwargs.items()))), []).append(index)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0:
                logger.warning("vee_mllm decodes greedily; do_sample/temperature are ignored")
            for chunk in _chunks(indices, self.batch_size):
                args = [requests[i].args for i in chunk]
                images = self._images([(a[2], a[3], a[4], a[5]) for a in args])
                texts = self.mllm.generate(images, [self._question(a[0]) for a in args], max_new_tokens=max_new)
                for i, text in zip(chunk, texts):
                    for stop in until:
                        if stop:
                            text = text.split(stop)[0]
                    answers[i] = text
        return answers  # type: ignore[return-value]

    @torch.no_grad()
    def _score(self, images: torch.Tensor, visual: torch.Tensor, questions: list[str], answers: list[str]) -> tuple[list[float], list[bool], list[int]]:
        """Answer losses (mean negative log-prob per answer token, nats), greedy flags and prompt lengths
        for one batch, given each item's image and its projector outputs ``visual`` (B, N, D_lm)."""
        mllm = self.mllm
        batch = mllm.prepare(images, questions, answers)
        hidden = mllm.lm.get_decoder()(inputs_embeds=mllm.embed(batch, visual), attention_mask=batch.attention_mask).last_hidden_state
        targets = batch.labels[:, 1:]
        scored = targets != -100
        logits = mllm.lm.get_output_embeddings()(hidden[:, :-1][scored]).float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[scored].unsqueeze(-1)).squeeze(-1)
        hits = (logits.argmax(-1) == targets[scored]).float()
        item = scored.nonzero()[:, 0]
        logp = torch.zeros(len(batch)).index_add(0, item.cpu(), token_logp.cpu())
        wrong = torch.zeros(len(batch)).index_add(0, item.cpu(), 1.0 - hits.cpu())
        prompt_lengths = (batch.attention_mask.sum(1) - scored.sum(1)).tolist()
        loss = -logp / scored.sum(1).clamp(min=1).cpu()
        return loss.tolist(), (wrong == 0).tolist(), [int(n) for n in prompt_lengths]

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(loss, is_greedy)`` per request, batched: loss = -log P(continuation | image, context) / its
        token count, which lmms-eval's ``multiple_choice`` minimises over the choices.

        The choices of one document (consecutive requests with the same task and doc_id) share one
        pass of the vision tower. Returned inside ``GenerationResult`` (with token counts): lmms-eval
        0.7.3's ``unwrap_generation_output`` turns a bare ``(float, bool)`` tuple into its string, which
        breaks every ``multiple_choice`` task; the wrapper's ``text`` is passed through unchanged.
        """
        results: list[GenerationResult | None] = [None] * len(requests)
        for chunk in _chunks(list(range(len(requests))), self.batch_size):
            images: dict[tuple, int] = {}
            rows, which, questions, answers = [], [], [], []
            for i in chunk:
                context, continuation, doc_to_visual, doc_id, task, split = requests[i].args
                if callable(continuation):
                    continuation = continuation(self.task_dict[task][split][doc_id])
                key = (task, split, doc_id)
                if key not in images:
                    images[key] = len(rows)
                    rows.append((doc_to_visual, doc_id, task, split))
                which.append(images[key])
                questions.append(self._question(context))
                answers.append(str(continuation).strip())
            index = torch.tensor(which, device=self.mllm.device)
            unique = self._images(rows)
            with torch.no_grad():
                visual = self.mllm.visual_tokens(unique)[index]
            losses, greedy, prompt_lengths = self._score(unique[index], visual, questions, answers)
            for i, loss, is_greedy, length in zip(chunk, losses, greedy, prompt_lengths):
                results[i] = GenerationResult(text=(float(loss), bool(is_greedy)), token_counts=TokenCounts(input_tokens=length))  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Rounds of greedy answers per document: round 0 from the request, later rounds from the
        task's ``doc_to_text(doc, previous_output=, round_idx=, previous_round_info=)``, which returns
        ``(visuals, context, terminal, round_results, round_info)``."""
        outputs = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            max_new = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
            visuals = doc_to_visual(doc)
            rounds: list[str] = []
            info = None
            round_idx = 0
            while True:
                if round_idx:
                    visuals, context, terminal, rounds, info = doc_to_text(doc, previous_output=list(rounds), round_idx=round_idx, previous_round_info=info)
                    rounds = list(rounds)
                    if terminal:
                        break
                if not visuals:
                    raise ValueError(f"{task} document {doc_id}, round {round_idx}: no image; vee_mllm answers questions about exactly one image")
                image = self._pixels(visuals[0]).unsqueeze(0).to(self.mllm.device, self.dtype)
                rounds.append(self.mllm.generate(image, [self._question(context)], max_new_tokens=max_new)[0])
                round_idx += 1
            outputs.append(list(rounds))  # a list of strings passes lmms-eval's unwrap unchanged
        return outputs
