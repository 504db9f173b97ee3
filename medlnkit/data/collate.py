"""Turn VQA records into model batches: pixel tensors, tokenised questions and answer labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from medlnkit.data.images import load_image, to_pixel_values
from medlnkit.data.records import VQARecord


class PixelCache:
    """Decode and resize each image once; datasets reuse images across many questions."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size = size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._cache: dict[Path, torch.Tensor] = {}

    def __call__(self, path: Path) -> torch.Tensor:
        """Return the (3, size, size) normalised pixel tensor of one image file."""
        path = Path(path)
        if path not in self._cache:
            self._cache[path] = to_pixel_values([load_image(path)], self.size, self.mean, self.std)[0]
        return self._cache[path]

    def batch(self, paths: Sequence[Path]) -> torch.Tensor:
        return torch.stack([self(p) for p in paths])


class MissCollator:
    """Build BLIP question-answering batches.

    Answers are tokenised as ``[DEC] answer [SEP]``: the decoder starts from the decoder start token
    and learns to end with ``[SEP]``. Padding positions of the labels are -100 so that the loss
    ignores them.
    """

    def __init__(self, tokenizer, pixels: PixelCache, max_question_tokens: int = 35, max_answer_tokens: int = 10):
        self.tokenizer = tokenizer
        self.pixels = pixels
        self.max_question_tokens = max_question_tokens
        self.max_answer_tokens = max_answer_tokens
        self.decoder_start_id = tokenizer.bos_token_id

    def questions(self, records: Sequence[VQARecord]) -> dict[str, torch.Tensor]:
        """Return pixel values and tokenised questions, for training and generation alike."""
        encoded = self.tokenizer(
            [r.question for r in records],
            padding="longest",
            truncation=True,
            max_length=self.max_question_tokens,
            return_tensors="pt",
        )
        return {
            "pixel_values": self.pixels.batch([r.image_path for r in records]),
            "input_ids": encoded.input_ids,
            "attention_mask": encoded.attention_mask,
        }

    def __call__(self, records: Sequence[VQARecord]) -> dict[str, torch.Tensor]:
        batch = self.questions(records)
        answers = self.tokenizer(
            [r.answer for r in records],
            padding="longest",
            truncation=True,
            max_length=self.max_answer_tokens + 2,
            return_tensors="pt",
        )
        decoder_input_ids = answers.input_ids.clone()
        decoder_input_ids[:, 0] = self.decoder_start_id  # replaces [CLS]
        labels = decoder_input_ids.masked_fill(answers.attention_mask == 0, -100)
        batch.update(
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=answers.attention_mask,
            labels=labels,
        )
        return batch
