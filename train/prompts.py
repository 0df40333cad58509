"""How a question becomes an MLLM's prompt: token ids with exactly one image placeholder.

Three formats, one per kind of MLLM this project reads:

* ``chat-template`` (the project's own MLLMs): the tokenizer's chat template over one user message whose
  content is the text ``<image>\\n{question}`` (``image-question``, LLaVA's order) or ``{question}\\n<image>``
  (``question-image``); tokenised without added special tokens.
* ``processor-chat`` (transformers ``LlavaForConditionalGeneration`` directories): the processor's chat
  template over one user message whose content is ``[{"type": "image"}, {"type": "text", "text": question}]``,
  tokenised as the processor tokenises it (the tokenizer's own special tokens added, e.g. Llama's BOS).
* ``conversation`` (the LLaVA-NeXT/OneVision repository): that repository's conversation template
  (``qwen_1_5``: ChatML with its default system message), ``<image>\\n{question}`` as the user turn, and its
  ``tokenizer_image_token``: the text is split at ``<image>``, each piece tokenised, the image index put
  between (a leading BOS kept once).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

IMAGE_TOKEN = "<image>"
PROMPT_KINDS = ("chat-template", "processor-chat", "conversation")
PROMPT_LAYOUTS = ("image-question", "question-image")


@dataclass(frozen=True)
class Conversation:
    """A LLaVA-NeXT ``SeparatorStyle.CHATML`` conversation template (``llava/conversation.py``)."""

    system: str
    user: str
    assistant: str
    separator: str

    def render(self, question: str) -> str:
        """The prompt up to the assistant's turn, as ``Conversation.get_prompt()`` writes it."""
        system = f"{self.system}{self.separator}\n" if self.system else ""
        return f"{system}{self.user}\n{question}{self.separator}\n{self.assistant}\n"


CONVERSATIONS = {
    "qwen_1_5": Conversation("<|im_start|>system\nYou are a helpful assistant.", "<|im_start|>user", "<|im_start|>assistant", "<|im_end|>"),
}


class PromptError(ValueError):
    """A prompt format that cannot be used with this tokenizer; the message names the fix."""


@dataclass(frozen=True)
class PromptFormat:
    """One of the formats of the module docstring. ``layout`` is used by ``chat-template``, ``template``
    (a Jinja chat template) by ``processor-chat``, ``conversation`` (a key of :data:`CONVERSATIONS`) by
    ``conversation``."""

    kind: str = "chat-template"
    layout: str = "image-question"
    template: str = ""
    conversation: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise PromptError(f"prompt kind {self.kind!r}: choose one of {', '.join(PROMPT_KINDS)}")
        if self.kind == "chat-template" and self.layout not in PROMPT_LAYOUTS:
            raise PromptError(f"prompt_layout {self.layout!r}: choose {' or '.join(PROMPT_LAYOUTS)}")
        if self.kind == "processor-chat" and not self.template:
            raise PromptError("a processor-chat prompt needs the processor's chat template (chat_template.jinja / chat_template.json)")
        if self.kind == "conversation" and self.conversation not in CONVERSATIONS:
            raise PromptError(f"conversation template {self.conversation!r}: this project knows {', '.join(CONVERSATIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptFormat":
        return cls(**{key: data[key] for key in ("kind", "layout", "template", "conversation") if key in data})

    def text(self, tokenizer, question: str) -> str:
        """The prompt as text, with one ``<image>`` where the image goes."""
        if self.kind == "chat-template":
            content = f"{IMAGE_TOKEN}\n{question}" if self.layout == "image-question" else f"{question}\n{IMAGE_TOKEN}"
            return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        if self.kind == "processor-chat":
            content = [{"type": "image"}, {"type": "text", "text": question}]
            return tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=self.template, add_generation_prompt=True, tokenize=False)
        return CONVERSATIONS[self.conversation].render(f"{IMAGE_TOKEN}\n{question}")

    def ids(self, tokenizer, question: str, image_token_id: int) -> list[int]:
        """Token ids of the prompt with one ``image_token_id`` where the image goes."""
        text = self.text(tokenizer, question)
        if self.kind == "conversation":
            return _split_at_image(tokenizer, text, image_token_id)
        ids = tokenizer(text, add_special_tokens=self.kind == "processor-chat")["input_ids"]
        if ids.count(image_token_id) != 1:
            raise PromptError(f"the chat template does not keep exactly one {IMAGE_TOKEN} in the prompt ({ids.count(image_token_id)} found); "
                              "check the chat template (tokenizer_config.json's chat_template, or the processor's chat_template.jinja)")
        return ids


def _split_at_image(tokenizer, text: str, image_token_id: int) -> list[int]:
    """LLaVA's ``tokenizer_image_token``: pieces between ``<image>`` tokenised alone, the image index
    between them, a BOS that every piece starts with kept once."""
    pieces = [tokenizer(piece)["input_ids"] for piece in text.split(IMAGE_TOKEN)]
    if len(pieces) != 2:
        raise PromptError(f"the conversation prompt holds {len(pieces) - 1} {IMAGE_TOKEN} placeholders, one expected")
    bos = tokenizer.bos_token_id
    ids, offset = [], 0
    if pieces[0] and bos is not None and pieces[0][0] == bos:
        offset = 1
        ids.append(bos)
    ids.extend(pieces[0][offset:])
    ids.append(image_token_id)
    ids.extend(pieces[1][offset:])
    return ids
