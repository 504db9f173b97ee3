"""Turn VQA records into LLaVA batches: a conversation prompt with image tokens, and answer labels.

A prompt template writes one question as the conversation format a model was trained with. The
image placeholder ``{image}`` becomes one image token per image feature (LLaVA replaces those
token embeddings by the projected vision features), so the number of image tokens in a row must
equal the number of features the vision tower produces. :func:`check_image_tokens` names the rows
that break that rule. Training labels cover the answer and the text that ends it; every other position
is -100, so the loss is the cross-entropy of the answer tokens only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medlnkit.data.collate import PixelCache
from medlnkit.data.records import VQARecord
from medlnkit.errors import DataError

IGNORE_INDEX = -100  # label of positions the loss skips (prompt, image tokens, padding)

# The system prompt of the "simple" conversation in LLaVA-Med v1's llava/conversation.py.
_LLAVA_MED_SIMPLE_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass(frozen=True)
class PromptTemplate:
    """A conversation format: the prompt around ``{image}`` and ``{question}``, and the answer's end.

    ``answer`` contains ``{answer}`` followed by the text that ends an answer; ``stop`` is the text
    at which a generated answer is cut. ``image_start`` and ``image_end`` are tokens written around
    the image tokens (LLaVA-Med v1 uses ``<im_start>`` and ``<im_end>``).
    """

    name: str
    prompt: str
    answer: str
    stop: str
    add_bos: bool
    source: str
    image_start: str = ""
    image_end: str = ""

    def prompt_text(self, question: str, image_text: str) -> str:
        """Return the prompt for one question, with ``image_text`` in place of ``{image}``."""
        return self.prompt.replace("{image}", image_text).replace("{question}", question)

    def answer_text(self, answer: str) -> str:
        """Return the target text of one answer, including the text that ends it."""
        return self.answer.replace("{answer}", answer)


TEMPLATES: dict[str, PromptTemplate] = {
    # LLaVA-Med v1 (LLaMA-7B): the "simple" conversation (system prompt, one example exchange,
    # "###" separators) with the image after the question, as in llava/eval/model_vqa_med.py. The
    # assistant role closes the prompt so that generation starts with the answer.
    "llava_med_v1": PromptTemplate(
        name="llava_med_v1",
        prompt=(
            _LLAVA_MED_SIMPLE_SYSTEM
            + "###Human: Hi!###Assistant: Hi there!  How can I help you today?\n"
            + "###Human: {question}\n{image}###Assistant:"
        ),
        answer=" {answer}###",
        stop="###",
        add_bos=True,
        source="LLaVA-Med v1 conv_templates['simple'], image after the question",
        image_start="<im_start>",
        image_end="<im_end>",
    ),
    # LLaVA-Med v1.5 (Mistral-7B): conv_templates["mistral_instruct"], a LLAMA_2-style
    # "[INST] ... [/INST]" turn without a system prompt, the image first.
    "mistral_instruct": PromptTemplate(
        name="mistral_instruct",
        prompt="[INST] {image}\n{question} [/INST]",
        answer=" {answer} </s>",
        stop="</s>",
        add_bos=True,
        source="LLaVA-Med v1.5 conv_templates['mistral_instruct']",
    ),
    # SmolLM2-Instruct's own ChatML turns, without its default system prompt (shorter on a CPU).
    "smollm2_chatml": PromptTemplate(
        name="smollm2_chatml",
        prompt="<|im_start|>user\n{image}\n{question}<|im_end|>\n<|im_start|>assistant\n",
        answer="{answer}<|im_end|>",
        stop="<|im_end|>",
        add_bos=False,
        source="SmolLM2-Instruct chat template (ChatML) without a system turn",
    ),
}


def get_template(name: str) -> PromptTemplate:
    """Return a prompt template by name, raising DataError that lists the known names."""
    if name not in TEMPLATES:
        raise DataError(f"unknown prompt template {name!r}: expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def check_image_tokens(
    input_ids: torch.Tensor, image_token_id: int, features_per_image: int, num_images: int | None = None
) -> None:
    """Raise DataError unless every row contains exactly ``features_per_image`` image tokens.

    ``input_ids`` is (batch, length) with one image per row; ``num_images`` is the number of images
    in the batch (the rows of ``pixel_values``), checked against the number of rows.
    """
    rows = input_ids.shape[0]
    if num_images is not None and num_images != rows:
        raise DataError(
            f"the batch has {rows} token rows but {num_images} images: LLaVA batches need one image per row"
        )
    counts = (input_ids == image_token_id).sum(dim=1).tolist()
    wrong = [(row, count) for row, count in enumerate(counts) if count != features_per_image]
    if wrong:
        shown = ", ".join(f"row {row}: {count}" for row, count in wrong[:5])
        raise DataError(
            f"image tokens do not match image features: the vision tower gives {features_per_image} "
            f"features per image, but the prompt contains {shown} image tokens (id {image_token_id}). "
            "Build prompts with LlavaCollator for this model, or fix num_image_tokens to "
            "(image_size / patch_size)^2 of the vision tower"
        )


def answer_window(labels: torch.Tensor) -> int:
    """Return how many trailing positions of a left-padded batch hold every label.

    The label at position ``t`` is predicted by the logits at ``t - 1``, so the loss needs the
    logits of the last ``window + 1`` positions. Raises DataError when no position has a label.
    """
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if labelled.numel() == 0:
        raise DataError("every label of this batch is masked (-100): there is no answer token to train on")
    return labels.shape[1] - int(labelled[0])


def _require_single_token(tokenizer, token: str, role: str) -> int:
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise DataError(
            f"the {role} {token!r} is not one token for this tokenizer (got {len(ids)} ids): add it with "
            "tokenizer.add_special_tokens and resize the model's embeddings"
        )
    return ids[0]


class LlavaCollator:
    """Build LLaVA training and generation batches, both padded on the left.

    ``num_image_tokens`` is the number of vision features per image; the image placeholder of the
    template becomes that many ``image_token`` tokens. Questions longer than
    ``max_question_tokens`` and answers longer than ``max_answer_tokens`` tokens are truncated, the
    answer's end marker is always kept, so no training row is left without a label.
    """

    def __init__(
        self,
        tokenizer,
        template: PromptTemplate,
        pixels: PixelCache,
        image_token: str,
        num_image_tokens: int,
        max_question_tokens: int = 64,
        max_answer_tokens: int = 32,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(
                f"LlavaCollator needs a fast tokenizer (with offset mapping), got {type(tokenizer).__name__}: "
                "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
        self.tokenizer = tokenizer
        self.template = template
        self.pixels = pixels
        self.image_token = image_token
        self.image_token_id = _require_single_token(tokenizer, image_token, "image token")
        for marker in (template.image_start, template.image_end):
            if marker:
                _require_single_token(tokenizer, marker, "image marker")
        self.num_image_tokens = num_image_tokens
        self.max_question_tokens = max_question_tokens
        self.max_answer_tokens = max_answer_tokens
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise DataError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
        self.pad_token_id = pad
        self.image_text = template.image_start + image_token * num_image_tokens + template.image_end

    def _truncate(self, text: str, limit: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= limit:
            return text
        return self.tokenizer.decode(ids[:limit]).strip()

    def prompt_text(self, record: VQARecord) -> str:
        question = self._truncate(record.question.strip(), self.max_question_tokens)
        return self.template.prompt_text(question, self.image_text)

    def _bos(self) -> list[int]:
        if self.template.add_bos and self.tokenizer.bos_token_id is not None:
            return [self.tokenizer.bos_token_id]
        return []

    def encode_prompt(self, record: VQARecord) -> list[int]:
        """Return the token ids of one record's prompt, image tokens included."""
        return self._bos() + self.tokenizer(self.prompt_text(record), add_special_tokens=False).input_ids

    def encode_example(self, record: VQARecord) -> tuple[list[int], list[int]]:
        """Return (input ids, labels) of one training example; labels cover the answer only."""
        prompt = self.prompt_text(record)
        answer = self.template.answer_text(self._truncate(record.answer.strip(), self.max_answer_tokens))
        encoded = self.tokenizer(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
        # Label the tokens that start at or after the prompt's last character, so the prompt and
        # the answer are tokenized together exactly as the model reads them.
        boundary = len(prompt)
        labels = [
            token if start >= boundary else IGNORE_INDEX
            for token, (start, _end) in zip(encoded.input_ids, encoded.offset_mapping)
        ]
        bos = self._bos()
        return bos + list(encoded.input_ids), [IGNORE_INDEX] * len(bos) + labels

    def _pad_left(self, sequences: list[list[int]], fill: int) -> torch.Tensor:
        length = max(len(ids) for ids in sequences)
        padded = torch.full((len(sequences), length), fill, dtype=torch.long)
        for row, ids in enumerate(sequences):
            padded[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        return padded

    def _batch(self, records: Sequence[VQARecord], sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        input_ids = self._pad_left(sequences, self.pad_token_id)
        attention_mask = self._pad_left([[1] * len(ids) for ids in sequences], 0)
        pixel_values = self.pixels.batch([r.image_path for r in records])
        check_image_tokens(input_ids, self.image_token_id, self.num_image_tokens, pixel_values.shape[0])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}

    def __call__(self, records: Sequence[VQARecord]) -> dict[str, torch.Tensor]:
        """Return a left-padded training batch: input_ids, attention_mask, position_ids, labels, pixel_values.

        Left padding aligns every answer with the last columns, so the loss needs the logits of
        the last few positions only (see :func:`answer_window`). Position ids count real tokens
        from 0, as generation does.
        """
        if not records:
            raise DataError("cannot build a batch from zero records")
        examples = [self.encode_example(r) for r in records]
        for record, (_, labels) in zip(records, examples):
            if all(label == IGNORE_INDEX for label in labels):
                raise DataError(
                    f"record {record.qid!r} has no answer tokens to train on (answer {record.answer!r}): "
                    "check the prompt template and the answer text"
                )
        batch = self._batch(records, [ids for ids, _ in examples])
        batch["labels"] = self._pad_left([labels for _, labels in examples], IGNORE_INDEX)
        batch["position_ids"] = (batch["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        return batch

    def prompts(self, records: Sequence[VQARecord]) -> dict[str, torch.Tensor]:
        """Return a left-padded generation batch: input_ids, attention_mask, pixel_values.

        Left padding puts every prompt's last token in the last column, where generation continues.
        """
        if not records:
            raise DataError("cannot build a batch from zero records")
        return self._batch(records, [self.encode_prompt(r) for r in records])

    def cut_answer(self, text: str) -> str:
        """Return a generated text up to the template's stop marker, stripped."""
        stop = self.template.stop
        if stop and stop in text:
            text = text[: text.index(stop)]
        # A decoded answer may start with the role name when a model repeats it.
        text = re.sub(r"^\s*(Assistant|ASSISTANT)\s*:", "", text)
        return text.strip()
