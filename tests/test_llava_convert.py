"""The LLaVA-Med checkpoint converter and delta application, on tiny checkpoints in the original layout.

The fixtures write checkpoints the way LLaVA-Med's code names its tensors (``model.layers.*``,
``model.mm_projector.*``, ``model.vision_tower.vision_tower.vision_model.*``), independently of the
converter's rules, and compare the converted model with the model the weights came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
)

from medlnkit.models.llava_arch import use_linear_projector
from medlnkit.models.llava_convert import (
    ConversionError,
    apply_delta,
    convert_checkpoint,
    convert_state_dict,
    read_state,
)

VOCAB = 64  # rows in the original checkpoint
VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
)
TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def direct_model(
    text_config, projector: str, image_token_id: int, vocab: int
) -> LlavaForConditionalGeneration:
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=text_config(vocab_size=vocab, **TEXT),
        image_token_index=image_token_id,
        image_seq_length=4,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    if projector == "linear":
        use_linear_projector(model)
    return model.eval()


def original_state(
    model: LlavaForConditionalGeneration, projector: str, rows: int, with_vision: bool
) -> dict:
    """Write a model's tensors under LLaVA-Med's original names (llava_arch.py, llava_mistral.py)."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("model.language_model."):
            name = "model." + key.removeprefix("model.language_model.")
        elif key == "lm_head.weight":
            name = key
        elif key.startswith("model.vision_tower."):
            if not with_vision:
                continue
            name = "model.vision_tower.vision_tower.vision_model." + key.removeprefix("model.vision_tower.")
        elif key.startswith("model.multi_modal_projector.linear_1."):
            prefix = "model.mm_projector." if projector == "linear" else "model.mm_projector.0."
            name = prefix + key.rsplit(".", 1)[1]
        elif key.startswith("model.multi_modal_projector.linear_2."):
            name = "model.mm_projector.2." + key.rsplit(".", 1)[1]
        else:
            raise AssertionError(f"unexpected key {key}")
        state[name] = tensor.detach().clone()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = state[name][:rows].clone()
    # Old checkpoints also store the rotary buffers, which transformers recomputes.
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    return state


def original_config(model_type: str, projector: str, vision_tower: str, start_end: bool) -> dict:
    return {
        "model_type": model_type,
        "architectures": ["LlavaMistralForCausalLM" if "mistral" in model_type else "LlavaLlamaForCausalLM"],
        "vocab_size": VOCAB,
        **TEXT,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "mm_vision_tower": vision_tower,
        "mm_hidden_size": VISION["hidden_size"],
        "mm_projector_type": projector,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": start_end,
        "mm_use_im_patch_token": start_end,
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
    }


def save_clip(model: LlavaForConditionalGeneration, folder: Path, same_weights: bool) -> Path:
    tower = CLIPVisionModel(model.config.vision_config)
    if same_weights:
        tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(str(folder))
    return folder


def save_sharded_safetensors(state: dict, folder: Path) -> None:
    keys = sorted(state)
    halves = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for name, part in halves.items():
        save_file({k: state[k].contiguous() for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def inputs(image_token_id: int, num_image_tokens: int = 4, extra: tuple[int, ...] = ()) -> dict:
    """Return two rows with the image tokens at different positions, and two random images."""
    torch.manual_seed(1)
    ids = [1, 5, *extra[:1], *[image_token_id] * num_image_tokens, *extra[1:], 7, 9, 11]
    return {
        "input_ids": torch.tensor([ids, ids[::-1]]),
        "pixel_values": torch.randn(2, 3, VISION["image_size"], VISION["image_size"]),
    }


@pytest.fixture
def v15_checkpoint(tmp_path):
    """A LLaVA-Med v1.5-style checkpoint: Mistral, mlp2x_gelu, vision weights inside, sharded safetensors."""
    direct = direct_model(MistralConfig, "mlp2x_gelu", image_token_id=VOCAB, vocab=VOCAB + 1)
    folder = tmp_path / "llava-med-v1.5"
    folder.mkdir()
    clip = save_clip(
        direct, tmp_path / "clip", same_weights=False
    )  # config only: the checkpoint contains the weights
    save_sharded_safetensors(original_state(direct, "mlp2x_gelu", VOCAB, with_vision=True), folder)
    (folder / "config.json").write_text(
        json.dumps(original_config("llava_mistral", "mlp2x_gelu", str(clip), False))
    )
    return direct, folder


@pytest.fixture
def v1_checkpoint(tmp_path):
    """A LLaVA-Med v1-style checkpoint: LLaMA, linear connector, no vision weights, pytorch_model.bin."""
    direct = direct_model(LlamaConfig, "linear", image_token_id=61, vocab=VOCAB)
    folder = tmp_path / "llava-med-v1"
    folder.mkdir()
    clip = save_clip(direct, tmp_path / "clip", same_weights=True)
    torch.save(original_state(direct, "linear", VOCAB, with_vision=False), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(original_config("llava", "linear", str(clip), True)))
    return direct, folder


def test_v15_logits_equal_direct_model(v15_checkpoint):
    direct, folder = v15_checkpoint
    converted = convert_checkpoint(folder)
    assert converted.projector == "mlp2x_gelu"
    assert converted.template == "mistral_instruct"
    assert converted.added_tokens == ["<image>"]
    assert converted.model.config.image_token_id == VOCAB
    batch = inputs(VOCAB)
    with torch.no_grad():
        expected = direct(**batch).logits[..., :VOCAB]
        actual = converted.model(**batch).logits[..., :VOCAB]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_v15_added_row_is_mean(v15_checkpoint):
    _, folder = v15_checkpoint
    model = convert_checkpoint(folder).model
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[VOCAB], embeddings[:VOCAB].mean(dim=0))
    assert model.lm_head.weight.shape[0] == VOCAB + 1


def test_v1_logits_equal_direct_model(v1_checkpoint):
    direct, folder = v1_checkpoint
    converted = convert_checkpoint(folder, image_token_id=61)
    assert converted.projector == "linear"
    assert converted.template == "llava_med_v1"
    assert converted.image_token == "<im_patch>"
    assert converted.added_tokens == []
    names = [n for n, _ in converted.model.named_parameters() if "multi_modal_projector" in n]
    assert names == [
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_1.bias",
    ]
    batch = inputs(61, extra=(62, 63))
    with torch.no_grad():
        torch.testing.assert_close(
            converted.model(**batch).logits, direct(**batch).logits, atol=1e-5, rtol=1e-5
        )


def test_v1_without_tokenizer_needs_image_token(v1_checkpoint):
    _, folder = v1_checkpoint
    with pytest.raises(ConversionError, match="image_token_id"):
        convert_checkpoint(folder)


def test_unexpected_key_is_named(v15_checkpoint):
    _, folder = v15_checkpoint
    state = read_state(folder)
    state["model.extra_adapter.weight"] = torch.zeros(2)
    with pytest.raises(ConversionError, match="model.extra_adapter.weight"):
        convert_state_dict(state, "mlp2x_gelu")


def test_linear_keys_rejected_for_mlp_projector(v1_checkpoint):
    _, folder = v1_checkpoint
    with pytest.raises(ConversionError, match="model.mm_projector.weight"):
        convert_state_dict(read_state(folder), "mlp2x_gelu")


def test_missing_key_is_named(v1_checkpoint):
    _, folder = v1_checkpoint
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["model.layers.1.mlp.up_proj.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(
        ConversionError, match=r"missing \['model.language_model.layers.1.mlp.up_proj.weight'\]"
    ):
        convert_checkpoint(folder, image_token_id=61)


def test_unknown_projector_type_raises(v1_checkpoint):
    _, folder = v1_checkpoint
    config = json.loads((folder / "config.json").read_text())
    config["mm_projector_type"] = "mlp3x_gelu"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="mlp3x_gelu"):
        convert_checkpoint(folder, image_token_id=61)


def test_missing_vision_tower_raises(v1_checkpoint):
    from medlnkit.errors import ProfileError

    _, folder = v1_checkpoint
    config = json.loads((folder / "config.json").read_text())
    config["mm_vision_tower"] = "openai/clip-vit-large-patch14"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ProfileError, match="openai/clip-vit-large-patch14"):
        convert_checkpoint(folder, image_token_id=61)


def test_folder_without_weights_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(original_config("llava", "linear", "x", True)))
    with pytest.raises(ConversionError, match="no weights found"):
        convert_checkpoint(tmp_path)


# --- apply_delta ---------------------------------------------------------------------------------

BASE_VOCAB = 60


@pytest.fixture
def delta_setup(tmp_path):
    """A LLaMA base (60 tokens, safetensors) and a LLaVA-Med v1-style delta (64 tokens, two .bin shards)."""
    torch.manual_seed(2)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=BASE_VOCAB, **TEXT))
    base_dir = tmp_path / "llama"
    base.save_pretrained(str(base_dir))
    base_state = read_state(base_dir)

    torch.manual_seed(3)
    delta = {key: torch.randn(tensor.shape) * 0.01 for key, tensor in base_state.items()}
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        delta[key] = torch.randn(VOCAB, TEXT["hidden_size"]) * 0.01
    delta["model.mm_projector.weight"] = torch.randn(TEXT["hidden_size"], VISION["hidden_size"])
    delta["model.mm_projector.bias"] = torch.randn(TEXT["hidden_size"])
    delta_dir = tmp_path / "delta"
    delta_dir.mkdir()
    keys = sorted(delta)
    shards = {"pytorch_model-00001-of-00002.bin": keys[:5], "pytorch_model-00002-of-00002.bin": keys[5:]}
    weight_map = {}
    for name, part in shards.items():
        torch.save({k: delta[k] for k in part}, delta_dir / name)
        weight_map.update({k: name for k in part})
    (delta_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (delta_dir / "config.json").write_text(
        json.dumps(original_config("llava", "linear", "openai/clip-vit-large-patch14", True))
    )
    (delta_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    return base_dir, base_state, delta_dir, delta


def test_apply_delta_adds_per_tensor(delta_setup, tmp_path):
    base_dir, base_state, delta_dir, delta = delta_setup
    out = apply_delta(base_dir, delta_dir, tmp_path / "target")
    target = read_state(out)
    assert set(target) == set(delta)
    layer = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(target[layer], base_state[layer] + delta[layer])
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        torch.testing.assert_close(target[key][:BASE_VOCAB], base_state[key] + delta[key][:BASE_VOCAB])
        torch.testing.assert_close(target[key][BASE_VOCAB:], delta[key][BASE_VOCAB:])
    torch.testing.assert_close(target["model.mm_projector.weight"], delta["model.mm_projector.weight"])
    assert json.loads((out / "config.json").read_text())["mm_projector_type"] == "linear"
    assert (out / "tokenizer_config.json").exists()


def test_apply_delta_rejects_unused_base_tensor(delta_setup, tmp_path):
    base_dir, base_state, delta_dir, _ = delta_setup
    base_state["model.extra.weight"] = torch.zeros(3)
    (base_dir / "model.safetensors").unlink()
    save_file(base_state, str(base_dir / "model.safetensors"))
    with pytest.raises(ConversionError, match="model.extra.weight"):
        apply_delta(base_dir, delta_dir, tmp_path / "target")


def test_apply_delta_rejects_shape_mismatch(delta_setup, tmp_path):
    base_dir, _, delta_dir, _ = delta_setup
    name = "model.norm.weight"
    shard_name = json.loads((delta_dir / "pytorch_model.bin.index.json").read_text())["weight_map"][name]
    shard = torch.load(delta_dir / shard_name, weights_only=True)
    shard[name] = torch.zeros(TEXT["hidden_size"] + 1)
    torch.save(shard, delta_dir / shard_name)
    with pytest.raises(ConversionError, match="model.norm.weight"):
        apply_delta(base_dir, delta_dir, tmp_path / "target")
