"""Read LLaVA-Med checkpoints: the original layout into transformers' LLaVA classes, and v1 deltas.

LLaVA-Med's own code (github.com/microsoft/LLaVA-Med; ``llava/model/llava_arch.py``,
``language_model/llava_mistral.py``, ``multimodal_projector/builder.py``) saves a causal LM whose
decoder also contains the vision parts. Its keys, and where :func:`convert_state_dict` puts them in
transformers 5's ``LlavaForConditionalGeneration``:

* ``model.<name>`` -> ``model.language_model.<name>`` for ``embed_tokens``, ``layers`` and ``norm``;
* ``lm_head.weight`` -> ``lm_head.weight``;
* ``model.mm_projector.{weight,bias}`` (``linear``) -> ``model.multi_modal_projector.linear_1.*``;
* ``model.mm_projector.0.*`` and ``.2.*`` (``mlp2x_gelu``) -> ``model.multi_modal_projector.linear_1.*``
  and ``linear_2.*``;
* ``model.vision_tower.vision_tower.vision_model.*`` -> ``model.vision_tower.*``.

Rotary ``inv_freq`` buffers and CLIP's ``position_ids`` are recomputed, so they are dropped. LLaVA-Med
v1 keeps its CLIP tower outside the checkpoint (it is loaded from ``mm_vision_tower``), so its
weights come from that CLIP folder instead. LLaVA-Med v1.5 marks the image by one id outside the
vocabulary (-200) and expands it into the image features; transformers' LLaVA expands the prompt
instead, so an ``<image>`` token is added with one new embedding row (the mean of the others).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
)

from medlnkit.errors import MedlnkitError, ProfileError
from medlnkit.models.llava_arch import use_linear_projector

logger = logging.getLogger(__name__)


class ConversionError(MedlnkitError, ValueError):
    """A checkpoint whose keys, shapes or configuration do not follow the expected LLaVA layout."""


# CLIP towers LLaVA-Med names in ``mm_vision_tower``; their configurations are known, so converting
# needs no download when the checkpoint contains the tower's weights.
KNOWN_VISION_TOWERS = {
    "openai/clip-vit-large-patch14": dict(image_size=224),
    "openai/clip-vit-large-patch14-336": dict(image_size=336),
}
_VIT_L14 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
    projection_dim=768,
)  # fmt: skip

_TEXT_CONFIGS = {
    "llava_mistral": MistralConfig,
    "mistral": MistralConfig,
    "llava_llama": LlamaConfig,
    "llava": LlamaConfig,
    "llama": LlamaConfig,
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_DROPPED = re.compile(r"\.rotary_emb\.inv_freq$|\.embeddings\.position_ids$")
_TEXT_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.")
_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."


# --- Reading checkpoint files --------------------------------------------------------------------


def checkpoint_files(folder: Path) -> list[Path]:
    """Return a checkpoint's weight files: the shards an index names, or the single weight file."""
    folder = Path(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return [folder / name]
    raise ConversionError(
        f"no weights found in {folder}: expected model.safetensors, pytorch_model.bin or a sharded "
        "index (model.safetensors.index.json / pytorch_model.bin.index.json)"
    )


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read one safetensors or PyTorch ``.bin`` weight file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix == ".bin":
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    raise ConversionError(f"unsupported weight file {path.name}: expected {' or '.join(_WEIGHT_SUFFIXES)}")


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint folder into one state dict."""
    state: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(folder):
        state.update(read_tensors(path))
    return state


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise ConversionError(f"config.json not found in {folder}: it is not a LLaVA-Med checkpoint folder")
    return json.loads(path.read_text())


def is_original_layout(config: Mapping) -> bool:
    """Return True for LLaVA-Med's own layout (a causal LM config with ``mm_*`` keys)."""
    return "text_config" not in config and any(key.startswith("mm_") for key in config)


# --- Converting the original layout --------------------------------------------------------------


def projector_type(config: Mapping) -> str:
    """Return ``linear`` or ``mlp2x_gelu``: the connector types transformers' LLaVA can hold."""
    kind = config.get("mm_projector_type", "linear")
    if kind not in ("linear", "mlp2x_gelu"):
        raise ConversionError(
            f"unsupported mm_projector_type {kind!r}: only 'linear' (LLaVA-Med v1) and 'mlp2x_gelu' "
            "(LLaVA-Med v1.5) map onto transformers' LLaVA connector"
        )
    return kind


def convert_state_dict(state: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Rename an original-layout state dict to transformers' LLaVA keys (see the module table).

    Raises ConversionError listing the keys that fit no rule, or that do not fit ``kind``.
    """
    converted: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        if _DROPPED.search(key):
            continue
        if key.startswith(_TEXT_PREFIXES):
            new = "model.language_model." + key.removeprefix("model.")
        elif key == "lm_head.weight":
            new = key
        elif key.startswith(_VISION_PREFIX):
            new = "model.vision_tower." + key.removeprefix(_VISION_PREFIX)
        elif kind == "linear" and key in ("model.mm_projector.weight", "model.mm_projector.bias"):
            new = "model.multi_modal_projector.linear_1." + key.rsplit(".", 1)[1]
        elif kind == "mlp2x_gelu" and re.fullmatch(r"model\.mm_projector\.[02]\.(weight|bias)", key):
            layer = {"0": "linear_1", "2": "linear_2"}[key.split(".")[2]]
            new = f"model.multi_modal_projector.{layer}." + key.rsplit(".", 1)[1]
        else:
            unexpected.append(key)
            continue
        converted[new] = tensor
    if unexpected:
        raise ConversionError(
            f"{len(unexpected)} checkpoint keys fit no LLaVA-Med rule (projector type {kind!r}): "
            f"{sorted(unexpected)[:8]}. Check mm_projector_type in config.json"
        )
    return converted


def vision_config_for(config: Mapping, vision_folder: Path | None) -> CLIPVisionConfig:
    """Return the CLIP configuration named by ``mm_vision_tower`` (a local folder or a known id)."""
    name = str(config.get("mm_vision_tower", ""))
    if vision_folder is not None:
        return CLIPVisionConfig.from_pretrained(str(vision_folder))
    if name in KNOWN_VISION_TOWERS:
        return CLIPVisionConfig(**_VIT_L14, **KNOWN_VISION_TOWERS[name])
    raise ConversionError(
        f"unknown vision tower {name!r} in config.json: pass vision_tower=<folder of a CLIP vision "
        f"checkpoint>, or use one of {', '.join(KNOWN_VISION_TOWERS)}"
    )


def _vision_folder(config: Mapping, vision_tower: str | Path | None) -> Path | None:
    """Return a local CLIP folder: the argument, ``mm_vision_tower`` when it is a folder, or the hub cache."""
    candidate = vision_tower or config.get("mm_vision_tower")
    if candidate is None:
        return None
    path = Path(str(candidate)).expanduser()
    if path.is_dir():
        return path
    if vision_tower is not None:
        raise ConversionError(f"vision tower folder {str(vision_tower)!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        # Downloads only when the hub is reachable and HF_HUB_OFFLINE is unset; the patterns skip
        # the TensorFlow and Flax copies of the CLIP weights.
        patterns = ["*.json", "*.safetensors", "*.txt"]
        return Path(snapshot_download(str(candidate), allow_patterns=patterns))
    except Exception:  # the hub client raises many error types when the model is not available
        return None


def _vision_weights(folder: Path) -> dict[str, torch.Tensor]:
    tower = CLIPVisionModel.from_pretrained(str(folder), dtype=torch.float32)
    return {f"model.vision_tower.{k}": v for k, v in tower.state_dict().items() if not _DROPPED.search(k)}


def text_config_for(config: Mapping, vocab_size: int) -> LlamaConfig | MistralConfig:
    """Return the language model's configuration from an original-layout config."""
    model_type = config.get("model_type", "llama")
    if model_type not in _TEXT_CONFIGS:
        raise ConversionError(
            f"unsupported model_type {model_type!r}: expected one of {', '.join(sorted(_TEXT_CONFIGS))}"
        )
    cls = _TEXT_CONFIGS[model_type]
    known = set(cls().to_dict())
    values = {
        k: v
        for k, v in config.items()
        if k in known and k not in ("model_type", "architectures", "transformers_version")
    }
    values["vocab_size"] = vocab_size
    return cls(**values)


@dataclass
class ConvertedLlava:
    """A LLaVA-Med checkpoint loaded into transformers' classes, with what the conversion changed."""

    model: LlavaForConditionalGeneration
    tokenizer: object | None
    image_token: str
    template: str  # prompt template name (medlnkit.data.llava_collate.TEMPLATES)
    projector: str
    added_tokens: list[str] = field(default_factory=list)


def _load_tokenizer(folder: Path):
    if not any(
        (folder / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        return None
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise ConversionError(f"the tokenizer in {folder} could not be loaded: {error}") from error


def convert_checkpoint(
    folder: Path,
    vision_tower: str | Path | None = None,
    image_token_id: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> ConvertedLlava:
    """Load an original-layout LLaVA-Med checkpoint folder into ``LlavaForConditionalGeneration``.

    ``vision_tower`` is a CLIP folder for checkpoints without vision weights (LLaVA-Med v1). Without
    it, ``mm_vision_tower`` from config.json is used when it is a folder or in the hub cache.
    ``image_token_id`` is only needed for LLaVA-Med v1 checkpoints without a tokenizer: the id of
    ``<im_patch>``. Raises ConversionError for missing or unexpected keys.
    """
    # NOTE: tested on tiny checkpoints written in LLaVA-Med's layout; never run on the published
    # 7B weights, which this machine cannot download.
    folder = Path(folder)
    config = read_config(folder)
    if not is_original_layout(config):
        raise ConversionError(f"{folder}/config.json is not in LLaVA-Med's original layout (no mm_* keys)")
    kind = projector_type(config)
    state = convert_state_dict(read_state(folder), kind)
    vision_folder = _vision_folder(config, vision_tower)
    if not any(k.startswith("model.vision_tower.") for k in state):
        if vision_folder is None:
            raise ProfileError(
                f"{folder} contains no vision tower weights and the CLIP tower "
                f"{config.get('mm_vision_tower')!r} is not available here: download it and pass its "
                "folder as vision_tower"
            )
        state.update(_vision_weights(vision_folder))

    tokenizer = _load_tokenizer(folder)
    embed_key = "model.language_model.embed_tokens.weight"
    if embed_key not in state:
        raise ConversionError(
            f"model.embed_tokens.weight is missing from {folder}: the checkpoint is incomplete"
        )
    rows = state[embed_key].shape[0]
    added: list[str] = []
    uses_start_end = bool(config.get("mm_use_im_start_end", False))
    if uses_start_end:
        # LLaVA-Med v1: the image features replace <im_patch> tokens between <im_start> and <im_end>.
        image_token, template = "<im_patch>", "llava_med_v1"
        if tokenizer is not None:
            missing = [t for t in ("<im_patch>", "<im_start>", "<im_end>") if t not in tokenizer.get_vocab()]
            if missing:
                tokenizer.add_tokens(missing, special_tokens=True)
                added += missing
            image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        elif image_token_id is None:
            raise ConversionError(
                f"{folder} has no tokenizer to find <im_patch> in: pass image_token_id (LLaVA-Med v1: 32001)"
            )
    else:
        image_token, template = (
            "<image>",
            "mistral_instruct" if "mistral" in config.get("model_type", "") else "llava_med_v1",
        )
        if tokenizer is not None:
            if "<image>" not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
                added.append("<image>")
            image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        else:
            image_token_id, added = rows, ["<image>"]
    vocab_size = max(rows, image_token_id + 1, len(tokenizer) if tokenizer is not None else 0)

    vision = vision_config_for(config, vision_folder)
    text = text_config_for(config, rows)
    select = config.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise ConversionError(
            f"unsupported mm_vision_select_feature {select!r}: expected 'patch' or 'cls_patch'"
        )
    llava_config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_layer=int(config.get("mm_vision_select_layer", -1)),
        vision_feature_select_strategy="default" if select == "patch" else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
    model = _assemble(llava_config, kind, state, dtype)
    if vocab_size > rows:
        from medlnkit.models.llava import add_token_rows

        add_token_rows(model, vocab_size)
    model.config.image_token_id = image_token_id
    logger.info("converted %s (%s connector, image token %s = %d)", folder, kind, image_token, image_token_id)
    return ConvertedLlava(model, tokenizer, image_token, template, kind, added)


def _assemble(
    config: LlavaConfig, kind: str, state: dict[str, torch.Tensor], dtype: torch.dtype
) -> LlavaForConditionalGeneration:
    """Build the model without random initialisation and load ``state`` into it, strictly."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            model = LlavaForConditionalGeneration(config)
            if kind == "linear":
                use_linear_projector(model)
    finally:
        torch.set_default_dtype(previous)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConversionError(
            f"the converted checkpoint does not fit LlavaForConditionalGeneration: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
        )
    for key, tensor in state.items():
        if tensor.shape != model.state_dict()[key].shape:
            raise ConversionError(
                f"tensor {key} has shape {tuple(tensor.shape)}, the configuration expects "
                f"{tuple(model.state_dict()[key].shape)}: check config.json"
            )
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=not config.tie_word_embeddings)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


def load_transformers_checkpoint(folder: Path, dtype: torch.dtype = torch.float32) -> ConvertedLlava:
    """Load a checkpoint already in transformers' LLaVA layout (a LlavaConfig config.json)."""
    try:
        model = LlavaForConditionalGeneration.from_pretrained(str(folder), dtype=dtype)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"{folder} could not be loaded as LlavaForConditionalGeneration: {error}"
        ) from error
    tokenizer = _load_tokenizer(Path(folder))
    if tokenizer is None:
        raise ConversionError(f"no tokenizer found in {folder}: the kit needs it to build prompts")
    image_token = tokenizer.convert_ids_to_tokens(model.config.image_token_id)
    text_type = model.config.text_config.model_type
    template = "mistral_instruct" if text_type == "mistral" else "llava_med_v1"
    return ConvertedLlava(model, tokenizer, image_token, template, "mlp2x_gelu")


def load_llava_checkpoint(folder: Path, dtype: torch.dtype = torch.float32) -> ConvertedLlava:
    """Load a LLaVA-Med folder in either layout, converting LLaVA-Med's original one."""
    config = read_config(folder)
    if is_original_layout(config):
        converted = convert_checkpoint(folder, dtype=dtype)
    else:
        converted = load_transformers_checkpoint(folder, dtype)
    if converted.tokenizer is None:
        raise ProfileError(
            f"no tokenizer found in {folder}: copy the tokenizer files of the checkpoint into it"
        )
    return converted


# --- LLaVA-Med v1 deltas -------------------------------------------------------------------------

_RESIZED = ("model.embed_tokens.weight", "lm_head.weight")
_DELTA_ONLY = ("model.mm_projector.", "model.vision_tower.")


def _tensor_index(folder: Path) -> dict[str, Path]:
    """Return the weight file of every tensor of a checkpoint, reading an index when there is one."""
    folder = Path(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).exists():
            weight_map = json.loads((folder / index_name).read_text())["weight_map"]
            return {key: folder / name for key, name in weight_map.items()}
    (path,) = checkpoint_files(folder)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {key: path for key in handle.keys()}
    return {key: path for key in read_tensors(path)}


def apply_delta(base_dir: Path, delta_dir: Path, out_dir: Path) -> Path:
    """Write LLaVA-Med v1's weights: the LLaMA base plus the published delta, tensor by tensor.

    As in LLaVA's ``apply_delta``: target = base + delta for every tensor of the base; the delta's
    vocabulary matrices have extra rows for the added tokens, which are taken from the delta as
    they are; tensors only in the delta (the connector) are copied. The output has the delta's
    shards (as safetensors), its config and tokenizer files. Raises ConversionError when a tensor
    fits none of these rules. Base and delta shards are read one at a time.
    """
    base_dir, delta_dir, out_dir = Path(base_dir), Path(delta_dir), Path(out_dir)
    from safetensors.torch import save_file

    base_index = _tensor_index(base_dir)
    used: set[str] = set()
    loaded: dict[Path, dict[str, torch.Tensor]] = {}

    def base_tensor(key: str) -> torch.Tensor:
        path = base_index[key]
        if path not in loaded:
            loaded.clear()  # keep one base shard in memory
            loaded[path] = read_tensors(path)
        return loaded[path][key]

    out_dir.mkdir(parents=True, exist_ok=True)
    delta_files = checkpoint_files(delta_dir)
    weight_map = {}
    for number, path in enumerate(delta_files, start=1):
        target = {}
        for key, delta in read_tensors(path).items():
            target[key] = _add_delta(key, delta, base_tensor(key) if key in base_index else None)
            used.add(key)
        name = f"model-{number:05d}-of-{len(delta_files):05d}.safetensors"
        save_file(
            {k: v.contiguous() for k, v in target.items()}, str(out_dir / name), metadata={"format": "pt"}
        )
        weight_map.update({key: name for key in target})
    unused = sorted(k for k in set(base_index) - used if not _DROPPED.search(k))
    if unused:
        raise ConversionError(
            f"{len(unused)} base tensors have no delta: {unused[:5]}. Is this the right base model?"
        )
    index = {"metadata": {"source": f"{base_dir} + {delta_dir}"}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for extra in _non_weight_files(delta_dir):
        shutil.copy2(extra, out_dir / extra.name)
    logger.info("applied the delta %s to %s: wrote %s", delta_dir, base_dir, out_dir)
    return out_dir


def _add_delta(key: str, delta: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    if base is None:
        if key.startswith(_DELTA_ONLY):
            return delta.clone()
        raise ConversionError(
            f"delta tensor {key} has no base tensor and is not a LLaVA connector or vision tensor"
        )
    if base.shape == delta.shape:
        return (base.float() + delta.float()).to(delta.dtype)
    if key in _RESIZED and delta.shape[0] > base.shape[0] and delta.shape[1:] == base.shape[1:]:
        target = delta.clone()
        rows = base.shape[0]
        target[:rows] = (base.float() + delta[:rows].float()).to(delta.dtype)
        return target
    raise ConversionError(
        f"tensor {key}: base shape {tuple(base.shape)} and delta shape {tuple(delta.shape)} do not fit: "
        "only the vocabulary matrices may have extra rows in the delta"
    )


def _non_weight_files(folder: Path) -> Iterable[Path]:
    for path in sorted(Path(folder).iterdir()):
        if (
            path.is_file()
            and not path.name.endswith(_WEIGHT_SUFFIXES)
            and not path.name.endswith(".index.json")
        ):
            yield path
