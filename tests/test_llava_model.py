"""LLaVA builders per profile, groups, image checks, generation and the offline `paper` error."""

from __future__ import annotations

import pytest
import torch

from medlnkit.data.llava_collate import IGNORE_INDEX
from medlnkit.errors import DataError, MedlnkitError, ProfileError
from medlnkit.models.llava import (
    IMAGE_TOKEN,
    PAPER_SOURCE,
    SOURCE_ENV,
    build_llava,
    check_batch,
    generate_answers,
    image_features_per_image,
)
from medlnkit.paradigms import LLAVA_GROUPS
from medlnkit.tuning.selectors import get_rules, group_of
from tests.helpers import square_records


@pytest.fixture(scope="module")
def smoke():
    return build_llava("smoke", seed=0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return square_records(tmp_path_factory.mktemp("squares"), count=6)


def test_smoke_parameters_all_in_groups(smoke):
    rules = get_rules("llava")
    groups = {group_of(name, rules) for name, _ in smoke.model.named_parameters()}
    assert groups == set(LLAVA_GROUPS)


def test_smoke_image_token_is_last_row(smoke):
    image_id = smoke.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert smoke.model.config.image_token_id == image_id == len(smoke.tokenizer) - 1
    assert smoke.model.get_input_embeddings().weight.shape[0] == len(smoke.tokenizer)


def test_smoke_uses_linear_connector(smoke):
    names = [n for n, _ in smoke.model.named_parameters() if "multi_modal_projector" in n]
    assert names == [
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
    ]


def test_smoke_weights_are_labelled_random(smoke):
    lines = smoke.describe_weights().splitlines()
    assert [line.split(":")[0] for line in lines] == list(LLAVA_GROUPS)
    assert all("random" in line for line in lines)


def test_image_features_match_vision_tower(smoke):
    vision = smoke.model.config.vision_config
    assert image_features_per_image(smoke.model.config) == (vision.image_size // vision.patch_size) ** 2 == 16


def test_forward_matches_collator_tokens(smoke, records):
    collator = smoke.collator()
    batch = collator(records[:2])
    output = smoke.model(**batch)
    assert torch.isfinite(output.loss)
    assert output.logits.shape[:2] == batch["input_ids"].shape


def test_check_batch_rejects_wrong_image_size(smoke, records):
    batch = smoke.collator()(records[:1])
    batch["pixel_values"] = torch.zeros(1, 3, 48, 48)
    with pytest.raises(MedlnkitError, match="expects 32 x 32"):
        check_batch(smoke.model, batch)


def test_check_batch_rejects_missing_image_tokens(smoke, records):
    batch = smoke.collator()(records[:1])
    image_id = smoke.model.config.image_token_id
    batch["input_ids"][batch["input_ids"] == image_id] = 0
    with pytest.raises(DataError, match="image tokens do not match"):
        check_batch(smoke.model, batch)


def test_batched_generation_equals_single(smoke, records):
    collator = smoke.collator()
    together = generate_answers(smoke, collator.prompts(records[:4]), collator, max_new_tokens=4)
    alone = [
        generate_answers(smoke, collator.prompts([r]), collator, max_new_tokens=4)[0] for r in records[:4]
    ]
    assert together == alone
    assert all(isinstance(text, str) for text in together)


def test_copy_is_independent(smoke):
    copy = smoke.copy()
    with torch.no_grad():
        copy.model.lm_head.weight.add_(1.0)
    assert not torch.equal(copy.model.lm_head.weight, smoke.model.lm_head.weight)


def test_paper_offline_names_source_and_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    with pytest.raises(ProfileError) as error:
        build_llava("paper")
    message = str(error.value)
    assert PAPER_SOURCE in message
    assert SOURCE_ENV in message
    assert "--profile cpu" in message


def test_paper_missing_folder_raises(tmp_path):
    with pytest.raises(ProfileError, match="is not a folder"):
        build_llava("paper", source=tmp_path / "absent" / "llava-med")


def test_unknown_profile_raises():
    with pytest.raises(ProfileError, match="smoke, cpu or paper"):
        build_llava("gpu")


@pytest.mark.slow
def test_cpu_profile_loads_smollm2(records):
    from medlnkit.models.llava import load_smollm2

    bundle = build_llava("cpu", seed=0)
    reference = load_smollm2()
    layer = "layers.3.mlp.down_proj.weight"
    assert torch.equal(
        bundle.model.model.language_model.get_parameter(layer), reference.model.get_parameter(layer)
    )
    assert "RANDOM" in bundle.describe_weights().splitlines()[0]
    assert bundle.model.lm_head.weight is bundle.model.get_input_embeddings().weight
    collator = bundle.collator()
    batch = collator(records[:2])
    assert (batch["labels"] != IGNORE_INDEX).any()
    answers = generate_answers(bundle, collator.prompts(records[:2]), collator, max_new_tokens=6)
    # The pretrained language model writes words even with a random vision tower.
    assert all(any(ch.isalpha() for ch in answer) for answer in answers)
