"""LLaVA-Med v1's architecture on transformers' ``LlavaForConditionalGeneration``, and its module rules.

LLaVA-Med v1 (Li et al., 2023; github.com/microsoft/LLaVA-Med, ``llava/model/llava.py``) joins:

* ``vision``: a CLIP ViT-L/14 vision tower at 224 px (``openai/clip-vit-large-patch14``), read at its
  second-to-last layer, 256 patch features of width 1,024;
* ``connector``: one ``nn.Linear(1024, 4096)`` (LLaVA v1's ``mm_projector``), where transformers'
  Llava class builds LLaVA-1.5's two-layer MLP, so :func:`build_llava_med_v1` swaps it;
* ``llm``: LLaMA-7B (32 layers, width 4,096, SwiGLU MLP of width 11,008, RMSNorm);
* ``lm_head``: the vocabulary matrices, i.e. the output projection and the input token embeddings.
  The study's counts show that its "LM head" state trains both (see ``LLAVA_RULES``).

The vocabulary is LLaMA's 32,000 tokens plus the four that LLaVA-Med's v0-style training script adds:
``[PAD]``, ``<im_patch>``, ``<im_start>`` and ``<im_end>`` (32,004 rows).

Importing this module registers ``LLAVA_RULES`` for the ``llava`` architecture. The Prefix installer
lives in ``medlnkit.models.llava``, which imports this module.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from medlnkit.tuning.apply import LoraSettings
from medlnkit.tuning.prefix import PrefixSettings
from medlnkit.tuning.selectors import ArchitectureRules, register_rules

LLAMA_VOCAB_SIZE = 32000
# Tokens LLaVA-Med's training script appends to LLaMA's vocabulary, in the order it adds them.
ADDED_TOKENS = ("[PAD]", "<im_patch>", "<im_start>", "<im_end>")
PAD_TOKEN_ID = LLAMA_VOCAB_SIZE  # "[PAD]"
IMAGE_PATCH_TOKEN_ID = LLAMA_VOCAB_SIZE + 1  # "<im_patch>": one per image feature in the prompt

# LLaVA-Med v1's LoRA and Prefix settings, as the parameter counts of the study's Table 2 imply them:
# * LoRA: rank 4 on all seven projections of every LLaMA layer (q, k, v, o, gate, up, down), so
#   F,F,LoRA,F trains 32 x 4 x (4 x (4,096 + 4,096) + 3 x (4,096 + 11,008)) = 9,994,240 parameters.
#   No rank gives that figure with fewer target modules. Alpha and dropout are the kit's defaults.
# * Prefix: 5 virtual tokens, reparameterised by a 4,096-wide MLP as in peft's prefix projection,
#   so F,F,Prefix,F trains 5 x 4,096 + (4,096 x 4,096 + 4,096) + (4,096 x 262,144 + 262,144)
#   = 1,090,805,760 parameters (262,144 = 32 layers x keys and values x 4,096).
LLAVA_MED_LORA = LoraSettings(rank=4)
LLAVA_MED_PREFIX = PrefixSettings(num_virtual_tokens=5, projection=True, projection_size=None)


def llava_med_v1_config(image_size: int = 224, vocab_size: int = LLAMA_VOCAB_SIZE + len(ADDED_TOKENS)) -> LlavaConfig:
    """Return LLaVA-Med v1's configuration: CLIP ViT-L/14 at ``image_size`` px and LLaMA-7B.

    ``image_size`` 224 is LLaVA-Med v1's vision tower and the one the study's percentages admit;
    336 gives LLaVA-1.5's tower, which differs only in its position embeddings (577 rows, not 257).
    """
    if image_size % 14:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size 14: use 224 or 336")
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        pad_token_id=PAD_TOKEN_ID,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_PATCH_TOKEN_ID,
        image_seq_length=(image_size // 14) ** 2,
        # LLaVA-Med reads the second-to-last CLIP layer and drops the CLS feature.
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


class LinearProjector(nn.Module):
    """LLaVA v1's connector: one linear map from vision features to the LLM's width.

    The weight is named ``linear_1`` like the first layer of transformers' two-layer projector,
    so LLaVA-Med's ``model.mm_projector.{weight,bias}`` map to ``multi_modal_projector.linear_1.*``.
    """

    def __init__(self, vision_hidden_size: int, text_hidden_size: int, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden_size, text_hidden_size, bias=bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """Map (batch, patches, vision width) features to (batch, patches, text width)."""
        return self.linear_1(image_features)


def use_linear_projector(model: LlavaForConditionalGeneration) -> None:
    """Replace the model's two-layer projector by :class:`LinearProjector`, on the same device."""
    config = model.config
    old = model.model.multi_modal_projector
    device = next(old.parameters()).device
    projector = LinearProjector(
        config.vision_config.hidden_size, config.text_config.hidden_size, config.multimodal_projector_bias
    )
    model.model.multi_modal_projector = projector.to(device)


def build_llava_med_v1(config: LlavaConfig | None = None) -> LlavaForConditionalGeneration:
    """Build LLaVA-Med v1 with random weights on the current default device.

    Build inside ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    model = LlavaForConditionalGeneration(config or llava_med_v1_config())
    use_linear_projector(model)
    return model


# Group patterns are tried in order, so the token embeddings land in lm_head before the llm pattern.
_GROUPS = {
    "vision": r"^model\.vision_tower\.",
    "connector": r"^model\.multi_modal_projector\.",
    "lm_head": r"^lm_head\.|^model\.language_model\.embed_tokens\.",
    "llm": r"^model\.language_model\.",
}

LLAVA_RULES = ArchitectureRules(
    name="llava",
    # The study's "LM head" contains both vocabulary matrices: F,T,LN,T minus F,F,LN,F is 266,375,168
    # = the connector (1,024 x 4,096 + 4,096) + 2 x 32,004 x 4,096.
    groups=_GROUPS,
    # CLIP: self_attn.{q,k,v,out}_proj with biases; LLaMA: self_attn.{q,k,v,o}_proj. No norm sits
    # inside either block, so both conventions agree: F,F,Attn,F = 32 x 4 x 4,096^2 = 2,147,483,648
    # and the vision tower adds 24 x 4 x (1,024^2 + 1,024) = 100,761,600.
    attention=r"\.self_attn\.",
    # The study's FFN trains two of LLaMA's three MLP matrices: F,T,FFN,T minus the connector and the
    # vocabulary matrices is 2,885,681,152 = 32 x 2 x 4,096 x 11,008. The counts cannot tell which
    # two; the kit takes up_proj and down_proj, the two matrices of a classic FFN, so `paper` leaves
    # gate_proj out and `strict` trains all three. CLIP: fc1 and fc2.
    ffn=r"\.mlp\.(gate_proj|up_proj|down_proj|fc1|fc2)\.",
    paper_ffn_exclude=r"\.mlp\.gate_proj\.",
    lora_targets={
        "vision": r"model\.vision_tower\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])",
        "llm": r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
    },
    # The study's LN counts leave out two norms: the LLM's final RMSNorm (F,F,LN,F = 262,144
    # = 32 layers x 2 x 4,096) and one 2,048-parameter CLIP LayerNorm (vision LN adds 100,352
    # = 24 x 2 x 2,048 + 2,048). Selecting norms by the name pattern "layer_?norm" misses exactly
    # LLaMA's `norm` and CLIP's misspelt `pre_layrnorm`, the kit's reading.
    # NOTE: the counts cannot tell pre_layrnorm from post_layernorm (2,048 parameters each).
    paper_ln_exclude=r"\.pre_layrnorm\.|^model\.language_model\.norm\.",
    notes={
        # Table 2's percentages allow totals of 7,044,801,080 to 7,046,063,082 parameters only:
        # 7,045,826,560 at 224 px fits, 7,046,154,240 at 336 px does not.
        "image_size": "224 px, LLaVA-Med v1's CLIP ViT-L/14",
        "vocab_size": "32,004 = LLaMA's 32,000 + [PAD], <im_patch>, <im_start>, <im_end>",
        "connector": "one Linear(1024, 4096) with bias = 4,198,400 parameters",
    },
)


register_rules(LLAVA_RULES)
