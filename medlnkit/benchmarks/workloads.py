"""Training workloads of the benchmark: models with one fixed batch, and tuning methods as paradigms.

Batches come from the embedded real-image sample (its first training questions), through the same
collator and image pipeline as training, so sequence lengths and image sizes are those of a run.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BlipForQuestionAnswering

from medlnkit.data.collate import MissCollator, PixelCache
from medlnkit.data.sample import sample_records
from medlnkit.errors import MedlnkitError
from medlnkit.models.blip_fixes import fix_cross_attention_masks
from medlnkit.models.miss import CLIP_MEAN, CLIP_STD, build_miss, build_tokenizer, paper_config
from medlnkit.tuning import apply_paradigm
from medlnkit.tuning.selectors import select_parameters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    """A model to train and the number of sample questions in its one batch."""

    model: str  # a key of MODEL_DESCRIPTIONS
    batch_size: int
    seed: int = 0


MODEL_DESCRIPTIONS = {
    "miss-base-480": "MISS-base architecture (BLIP VQA base: ViT-B/16 at 480 px, BERT-base JTM and "
    "decoder), random weights",
    "miss-base-224": "MISS-base architecture at 224 px instead of 480 px (197 instead of 901 image "
    "tokens), random weights",
    "miss-smoke": "MISS smoke profile (2 layers, width 32, 64 px), random weights",
    "llava-cpu": "LLaVA cpu profile: pretrained SmolLM2-135M-Instruct language model, random CLIP "
    "vision tower (4 layers, width 256, 96 px) and connector",
    "llava-smoke": "LLaVA smoke profile (tiny random LLaMA and CLIP), random weights",
}

ARCHITECTURES = {
    "miss-base-480": "miss",
    "miss-base-224": "miss",
    "miss-smoke": "miss",
    "llava-cpu": "llava",
    "llava-smoke": "llava",
}


@dataclass(frozen=True)
class Method:
    """A tuning method as the benchmark runs it: a paradigm and the code that applies it."""

    key: str  # the name in results: full, LN, Attn, FFN, LoRA, Prefix, ...
    paradigm: str
    implementation: str = "kit"  # "kit" (apply_paradigm) or "peft" (peft's LNTuningConfig)
    note: str = ""


# Each method runs in every group that supports it. Prefix-tuning has no ViT variant, so its ViT is
# frozen; with nothing trainable below them, its backward pass skips the ViT entirely. "LN-frozen-vit"
# is LN-tuning with the same frozen ViT, to compare Prefix against LN on an equal footing.
MISS_METHODS = (
    Method("full", "T,T,T"),
    Method("LN", "LN,LN,LN"),
    Method("Attn", "Attn,Attn,Attn"),
    Method("FFN", "FFN,FFN,FFN"),
    Method("LoRA", "LoRA,LoRA,LoRA"),
    Method("Prefix", "F,Prefix,Prefix", note="the ViT has no Prefix variant and is frozen"),
    Method("LN-frozen-vit", "F,LN,LN", note="LN with Prefix's frozen ViT"),
    Method("peft-LN", "LN,LN,LN", implementation="peft", note="peft LNTuningConfig on the kit's LN modules"),
)

# LLaVA's connector and LM head support only T and F, so the methods freeze them. Prefix-tuning
# exists for the language model only, hence the frozen vision tower of "Prefix" and its LN twin.
LLAVA_METHODS = (
    Method("full", "T,T,T,T"),
    Method("LN", "LN,F,LN,F"),
    Method("Attn", "Attn,F,Attn,F"),
    Method("FFN", "FFN,F,FFN,F"),
    Method("LoRA", "LoRA,F,LoRA,F"),
    Method("Prefix", "F,F,Prefix,F", note="the vision tower has no Prefix variant and is frozen"),
    Method("LN-frozen-vision", "F,F,LN,F", note="LN with Prefix's frozen vision tower"),
    Method("peft-LN", "LN,F,LN,F", implementation="peft", note="peft LNTuningConfig on the kit's LN modules"),
)

METHODS = {"miss": MISS_METHODS, "llava": LLAVA_METHODS}


def workload_architecture(model: str) -> str:
    """Return the architecture (miss or llava) of a benchmark model key."""
    if model not in ARCHITECTURES:
        raise MedlnkitError(f"unknown benchmark model {model!r}: expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model]


def _build_miss_model(model: str) -> tuple[BlipForQuestionAnswering, object, int]:
    if model == "miss-smoke":
        bundle = build_miss("smoke")
        return bundle.model, bundle.tokenizer, bundle.image_size
    image_size = 480 if model == "miss-base-480" else 224
    network = BlipForQuestionAnswering(paper_config(image_size))
    # Tied as in the checkpoint: the decoder's output matrix is its word embeddings.
    network.tie_weights()
    fix_cross_attention_masks(network)
    return network, build_tokenizer(), image_size


def _build_llava_workload(model: str, records: list, seed: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from medlnkit.models.llava import build_llava
    from medlnkit.profiles import get_profile

    profile = model.removeprefix("llava-")
    bundle = build_llava(profile, seed=seed)
    settings = get_profile(profile).llava_train
    collator = bundle.collator(settings.max_question_tokens, settings.max_answer_tokens)
    return bundle.model, collator(records)


def build_workload(workload: Workload) -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    """Build the workload's model (random parts seeded) and its batch; return them and the architecture."""
    architecture = workload_architecture(workload.model)
    records = sample_records("train")[: workload.batch_size]
    if architecture == "llava":
        network, batch = _build_llava_workload(workload.model, records, workload.seed)
        return network, batch, architecture
    torch.manual_seed(workload.seed)
    network, tokenizer, image_size = _build_miss_model(workload.model)
    collator = MissCollator(tokenizer, PixelCache(image_size, CLIP_MEAN, CLIP_STD))
    return network, collator(records), architecture


def ln_module_names(model: nn.Module, architecture: str, paradigm: str) -> list[str]:
    """Return the norm modules that the kit's LN-tuning trains under ``paradigm`` (paper convention)."""
    from medlnkit.paradigms import parse_paradigm

    names = set()
    for group, state in parse_paradigm(paradigm, architecture).items():
        if state == "LN":
            for parameter in select_parameters(model, architecture, group, "LN", "paper"):
                names.add(parameter.rsplit(".", 1)[0])
    return sorted(names)


def apply_method(model: nn.Module, architecture: str, method: Method) -> nn.Module:
    """Apply ``method`` to ``model`` and return the module to call (a peft wrapper for peft methods)."""
    if method.implementation == "kit":
        if architecture == "llava":
            # The LLaVA sweep's settings: the study's LoRA rank 4 on all seven LLaMA projections and
            # 5 prefix tokens. Importing the module also installs the trainable Prefix variant.
            from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS

            apply_paradigm(model, method.paradigm, architecture, lora=LORA_SETTINGS, prefix=PREFIX_SETTINGS)
        else:
            apply_paradigm(model, method.paradigm, architecture)
        return model
    if method.implementation != "peft":
        raise MedlnkitError(f"unknown implementation {method.implementation!r}: expected kit or peft")
    from peft import LNTuningConfig, get_peft_model

    # peft needs explicit targets for BLIP and LLaVA; naming the kit's own norm modules makes both
    # implementations train the same parameters. peft trains a copy of each target and freezes the rest.
    targets = ln_module_names(model, architecture, method.paradigm)
    with warnings.catch_warnings():
        # peft 0.21 looks for in/out features on every target and warns that LayerNorm has none.
        warnings.filterwarnings("ignore", message="Unsupported layer type", category=UserWarning)
        # transformers 5.25 deprecates the method that peft calls while wrapping the model.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(model, LNTuningConfig(target_modules=targets))
