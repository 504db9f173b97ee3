"""Table 2 paradigms on the smoke LLaVA: exact trainable names, updates, loss, LoRA and Prefix."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from medlnkit.llava_training import LlavaTrainOptions, train_llava
from medlnkit.models.llava import (
    LORA_SETTINGS,
    PREFIX_SETTINGS,
    build_llava,
    generate_answers,
    unused_vision_parameters,
)
from medlnkit.paradigms import TABLE2_PARADIGMS
from medlnkit.profiles import TrainSettings
from medlnkit.tuning import apply_paradigm
from tests.helpers import square_records

LAYERS = range(2)  # the smoke LLaMA and CLIP both have two layers
LORA_MODULES = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]


def llm(*suffixes: str) -> set[str]:
    return {f"model.language_model.layers.{i}.{s}" for i in LAYERS for s in suffixes}


def vision(*suffixes: str) -> set[str]:
    return {f"model.vision_tower.encoder.layers.{i}.{s}" for i in LAYERS for s in suffixes}


LLM_LN = llm("input_layernorm.weight", "post_attention_layernorm.weight")
VISION_LN = vision(*(f"layer_norm{n}.{w}" for n in (1, 2) for w in ("weight", "bias"))) | {
    "model.vision_tower.post_layernorm.weight",
    "model.vision_tower.post_layernorm.bias",
}
LLM_ATTN = llm(*(f"self_attn.{p}_proj.weight" for p in "qkvo"))
VISION_ATTN = vision(*(f"self_attn.{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")))
LLM_FFN = llm("mlp.up_proj.weight", "mlp.down_proj.weight")
LLM_LORA = llm(*(f"{m}.lora_{ab}.default.weight" for m in LORA_MODULES for ab in "AB"))
PREFIX = {
    f"model.language_model.prefix_encoder.{n}"
    for n in ("embedding.weight", "down.weight", "down.bias", "up.weight", "up.bias")
}
CONNECTOR = {"model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.bias"}
HEAD = {"lm_head.weight", "model.language_model.embed_tokens.weight"}

# Trainable names of every Table 2 paradigm under the paper convention (llava_arch.LLAVA_RULES).
EXPECTED = {
    "LN,F,LN,F": VISION_LN | LLM_LN,
    "F,F,LN,F": LLM_LN,
    "LN,T,LN,T": VISION_LN | LLM_LN | CONNECTOR | HEAD,
    "F,T,LN,T": LLM_LN | CONNECTOR | HEAD,
    "Attn,F,Attn,F": VISION_ATTN | LLM_ATTN,
    "F,F,Attn,F": LLM_ATTN,
    "Attn,T,Attn,T": VISION_ATTN | LLM_ATTN | CONNECTOR | HEAD,
    "F,T,Attn,T": LLM_ATTN | CONNECTOR | HEAD,
    "F,T,FFN,T": LLM_FFN | CONNECTOR | HEAD,
    "F,F,FFN,F": LLM_FFN,
    "F,F,LoRA,F": LLM_LORA,
    "F,T,LoRA,T": LLM_LORA | CONNECTOR | HEAD,
    "F,F,Prefix,F": PREFIX,
    "F,T,Prefix,T": PREFIX | CONNECTOR | HEAD,
}


@pytest.fixture(scope="module")
def base():
    return build_llava("smoke", seed=0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return square_records(tmp_path_factory.mktemp("squares"), count=8)


def tuned(base, paradigm: str):
    bundle = base.copy()
    plan = apply_paradigm(bundle.model, paradigm, "llava", lora=LORA_SETTINGS, prefix=PREFIX_SETTINGS)
    return bundle, plan


def test_expected_covers_table2():
    assert set(EXPECTED) == set(TABLE2_PARADIGMS)


@pytest.mark.parametrize("paradigm", TABLE2_PARADIGMS)
def test_trainable_names_exact(base, paradigm):
    bundle, plan = tuned(base, paradigm)
    names = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert names == EXPECTED[paradigm]
    assert plan.trainable == EXPECTED[paradigm]


@pytest.mark.slow
@pytest.mark.parametrize("paradigm", ["LN,F,LN,F", "F,T,Attn,T", "F,F,FFN,F", "F,F,LoRA,F", "F,T,Prefix,T"])
def test_steps_change_only_trainable(base, records, paradigm):
    bundle, plan = tuned(base, paradigm)
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    settings = TrainSettings(epochs=1, batch_size=4, learning_rate=1e-2, weight_decay=0.0)
    # No warmup: the first step of a warmup schedule has a learning rate of zero.
    train_llava(
        bundle.model,
        records,
        bundle.collator(),
        settings,
        LlavaTrainOptions(warmup_ratio=0.0, scheduler="constant"),
    )
    changed = {n for n, p in bundle.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == plan.trainable - unused_vision_parameters(bundle.model)


def test_unused_vision_parameters_follow_feature_layer(base):
    # vision_feature_layer -2 of a two-layer CLIP reads layer 0's output: layer 1 and the final norm go unused.
    unused = unused_vision_parameters(base.model)
    assert unused == {
        n
        for n, _ in base.model.named_parameters()
        if n.startswith(("model.vision_tower.encoder.layers.1.", "model.vision_tower.post_layernorm."))
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", ["LN", "Attn", "FFN", "LoRA", "Prefix"])
def test_seeded_loss_decreases(base, records, method):
    bundle, _ = tuned(base, f"F,F,{method},F")
    torch.manual_seed(0)
    settings = TrainSettings(epochs=6, batch_size=4, learning_rate=2e-2, weight_decay=0.0, seed=0)
    # Four records, one batch per epoch: the same batch six times.
    result = train_llava(
        bundle.model,
        records[:4],
        bundle.collator(),
        settings,
        LlavaTrainOptions(warmup_ratio=0.0, scheduler="constant"),
    )
    assert len(result.losses) == 6
    assert round(result.losses[-1], 3) < round(result.losses[0], 3) - 0.01


def test_llm_lora_adds_nothing_to_vision(base):
    bundle, plan = tuned(base, "F,F,LoRA,F")
    lora_modules = [n for n, m in bundle.model.named_modules() if hasattr(m, "lora_A")]
    assert lora_modules
    assert all(n.startswith("model.language_model.layers.") for n in lora_modules)
    assert not any("lora_" in n for n, _ in bundle.model.model.vision_tower.named_parameters())


def test_vision_lora_stays_in_vision(base):
    bundle, _ = tuned(base, "LoRA,F,F,F")
    lora = {n for n, _ in bundle.model.named_parameters() if "lora_" in n}
    assert lora
    assert all(n.startswith("model.vision_tower.encoder.layers.") for n in lora)


def test_lora_rank_follows_llava_med(base):
    bundle, _ = tuned(base, "F,F,LoRA,F")
    weight = bundle.model.get_parameter(
        "model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"
    )
    assert weight.shape[0] == LORA_SETTINGS.rank == 4


def _prefix_cache(encoder, num_layers: int, batch: int) -> DynamicCache:
    cache = DynamicCache()
    for layer in range(num_layers):
        keys, values = encoder.key_values(layer, batch)
        cache.update(keys.detach().clone(), values.detach().clone(), layer)
    return cache


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_prefix_equals_prefilled_cache(base, implementation):
    """Prefix attention gives the hidden states of the base model reading a cache prefilled with the prefixes."""
    bundle, _ = tuned(base, "F,F,Prefix,F")
    bundle.model.set_attn_implementation(implementation)
    reference = base.copy().model
    reference.set_attn_implementation(implementation)
    language_model = bundle.model.model.language_model
    encoder = language_model.prefix_encoder
    with torch.no_grad():
        encoder.embedding.weight.normal_(std=1.0)  # make the prefixes matter
    input_ids = torch.tensor([[0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    num_prefix = encoder.num_virtual_tokens
    with torch.no_grad():
        ours = language_model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions
        ).last_hidden_state
        cache = _prefix_cache(encoder, language_model.config.num_hidden_layers, 2)
        full_mask = torch.cat([torch.ones(2, num_prefix, dtype=mask.dtype), mask], dim=1)
        theirs = reference.model.language_model(
            input_ids=input_ids, attention_mask=full_mask, position_ids=positions, cache=cache
        ).last_hidden_state
        plain = reference.model.language_model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions
        ).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours[real], plain[real], atol=1e-3)


def test_prefix_generation_batched_equals_single(base, records):
    bundle, _ = tuned(base, "F,F,Prefix,F")
    with torch.no_grad():
        bundle.model.model.language_model.prefix_encoder.embedding.weight.normal_(std=1.0)
    collator = bundle.collator()
    together = generate_answers(bundle, collator.prompts(records[:3]), collator, max_new_tokens=4)
    alone = [
        generate_answers(bundle, collator.prompts([r]), collator, max_new_tokens=4)[0] for r in records[:3]
    ]
    assert together == alone


def test_prefix_counts_follow_study_settings(base):
    bundle, _ = tuned(base, "F,F,Prefix,F")
    encoder = bundle.model.model.language_model.prefix_encoder
    config = bundle.model.config.text_config
    kv_width = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    assert encoder.embedding.weight.shape == (PREFIX_SETTINGS.num_virtual_tokens, kv_width)
    assert encoder.up.weight.shape == (config.num_hidden_layers * 2 * kv_width, kv_width)


def test_prefix_rejected_outside_llm(base):
    bundle = base.copy()
    from medlnkit.models.llava import install_llava_prefix

    with pytest.raises(ValueError, match="llm group"):
        install_llava_prefix(bundle.model, "vision", PREFIX_SETTINGS)
