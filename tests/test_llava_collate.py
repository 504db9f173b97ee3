"""LLaVA prompts, image tokens and answer labels, with SmolLM2's real tokenizer."""

from __future__ import annotations

import pytest
import torch

from medlnkit.data.collate import PixelCache
from medlnkit.data.llava_collate import (
    IGNORE_INDEX,
    TEMPLATES,
    LlavaCollator,
    answer_window,
    check_image_tokens,
    get_template,
)
from medlnkit.data.records import VQARecord
from medlnkit.errors import DataError
from medlnkit.models.llava import IMAGE_TOKEN, smollm2_tokenizer
from tests.helpers import square_records

NUM_IMAGE_TOKENS = 4


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return square_records(tmp_path_factory.mktemp("squares"), count=6)


def make_collator(tokenizer, **options) -> LlavaCollator:
    pixels = PixelCache(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return LlavaCollator(
        tokenizer, get_template("smollm2_chatml"), pixels, IMAGE_TOKEN, NUM_IMAGE_TOKENS, **options
    )


def test_prompt_text_follows_chatml(tokenizer, records):
    collator = make_collator(tokenizer)
    text = collator.prompt_text(records[0])
    assert text == (
        "<|im_start|>user\n"
        + IMAGE_TOKEN * NUM_IMAGE_TOKENS
        + "\nis the bright square on the left?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_labels_cover_answer_and_end(tokenizer, records):
    collator = make_collator(tokenizer)
    batch = collator(records[:3])
    for row, record in enumerate(records[:3]):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(labelled) == record.answer + "<|im_end|>"


def test_training_batch_is_left_padded(tokenizer, records):
    collator = make_collator(tokenizer)
    batch = collator(records[:2])  # a closed and an open question of different lengths
    mask = batch["attention_mask"]
    assert mask[:, -1].all()
    assert not mask[:, 0].all()
    assert torch.equal(batch["position_ids"][mask.bool()].min(), torch.tensor(0))
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_generation_prompt_ends_with_assistant_turn(tokenizer, records):
    collator = make_collator(tokenizer)
    batch = collator.prompts(records[:2])
    last = [tokenizer.decode(row[-3:]) for row in batch["input_ids"]]
    assert all(text.endswith("assistant\n") for text in last)
    assert "labels" not in batch


def test_prompt_ids_match_training_prefix(tokenizer, records):
    collator = make_collator(tokenizer)
    prompt = collator.encode_prompt(records[1])
    ids, labels = collator.encode_example(records[1])
    assert ids[: len(prompt)] == prompt
    assert all(label == IGNORE_INDEX for label in labels[: len(prompt)])
    assert labels[len(prompt)] != IGNORE_INDEX


def test_every_row_has_image_tokens(tokenizer, records):
    collator = make_collator(tokenizer)
    batch = collator(records)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [NUM_IMAGE_TOKENS] * len(records)


def test_long_answer_is_truncated_but_ended(tokenizer, records):
    collator = make_collator(tokenizer, max_answer_tokens=3)
    long = VQARecord(
        "x",
        records[0].image_path,
        "what is shown?",
        "a very long answer with many words",
        "OPEN",
        "t",
        "train",
    )
    labels = collator([long])["labels"][0]
    labelled = labels[labels != IGNORE_INDEX]
    assert len(labelled) == 4
    assert tokenizer.decode(labelled[-1:]) == "<|im_end|>"


def test_long_question_is_truncated(tokenizer, records):
    collator = make_collator(tokenizer, max_question_tokens=5)
    long = VQARecord("x", records[0].image_path, "word " * 40 + "?", "yes", "CLOSED", "t", "train")
    question_part = collator.prompt_text(long).split("\n")[2]
    assert len(tokenizer(question_part, add_special_tokens=False).input_ids) <= 6


def test_image_token_mismatch_raises(tokenizer):
    ids = torch.tensor([[5, 7, 7, 7, 9], [5, 7, 7, 9, 9]])
    with pytest.raises(DataError, match="row 1: 2"):
        check_image_tokens(ids, image_token_id=7, features_per_image=3)


def test_image_count_mismatch_raises():
    ids = torch.tensor([[7, 7]])
    with pytest.raises(DataError, match="1 token rows but 2 images"):
        check_image_tokens(ids, image_token_id=7, features_per_image=2, num_images=2)


def test_answer_window_spans_longest_answer():
    labels = torch.tensor([[-100, -100, -100, 4, 2], [-100, -100, 8, 9, 2]])
    assert answer_window(labels) == 3


def test_answer_window_rejects_masked_batch():
    with pytest.raises(DataError, match="masked"):
        answer_window(torch.full((2, 4), IGNORE_INDEX))


def test_unknown_template_raises():
    with pytest.raises(DataError, match="smollm2_chatml"):
        get_template("vicuna")


def test_templates_hold_placeholders():
    for template in TEMPLATES.values():
        assert "{image}" in template.prompt
        assert "{question}" in template.prompt
        assert template.answer.startswith(("{answer}", " {answer}"))
        assert template.stop in template.answer


def test_cut_answer_stops_at_marker(tokenizer):
    collator = make_collator(tokenizer)
    assert collator.cut_answer(" yes<|im_end|>extra") == "yes"
    assert collator.cut_answer("Assistant: left") == "left"


def test_image_token_must_be_one_token(tokenizer):
    pixels = PixelCache(32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(DataError, match="not one token"):
        LlavaCollator(tokenizer, get_template("smollm2_chatml"), pixels, "<not-a-token>", 4)
