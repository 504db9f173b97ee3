"""Fine-tune LLaVA through accelerate with LLaVA-Med's schedule; checkpoints hold trainable tensors only.

The same loop runs in a notebook (one process, CPU or GPU) and under ``accelerate launch`` (several
processes with DDP, or FSDP with ``medlnkit/resources/accelerate/fsdp.yaml``). It follows the
study's LLaVA-Med settings: AdamW, a linear warmup over 3% of the steps, then a cosine decay, and
TF32 matrix products on CUDA GPUs.

A checkpoint folder ``checkpoint-<step>/`` contains ``trainable.safetensors`` (the parameters that
train under the paradigm, about 1 MB for LN-tuning of LLaMA-7B's norms), ``optimizer.pt`` and
``scheduler.pt`` (the optimizer and schedule state, also over trainable parameters only) and
``trainer_state.json`` (step, epoch, loss history). :func:`train_llava` resumes from such a folder.

Command line (one process, or several through ``accelerate launch``)::

    accelerate launch --config_file medlnkit/resources/accelerate/fsdp.yaml -m medlnkit.llava_training \\
        --profile paper --paradigm F,F,LN,F --data-dir /data/slake --out runs/llava-ln
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from medlnkit.data.llava_collate import IGNORE_INDEX, answer_window
from medlnkit.errors import DataError, MedlnkitError
from medlnkit.profiles import TrainSettings
from medlnkit.training import seed_everything

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class LlavaTrainOptions:
    """LLaVA-Med's schedule and the loop's checkpointing (epochs, batch size and rates: TrainSettings)."""

    warmup_ratio: float = 0.03  # fraction of the optimizer steps with a linear warmup
    scheduler: str = "cosine"  # "cosine" (LLaVA-Med) or "constant" (after the warmup)
    tf32: bool = True  # TF32 matrix products on CUDA GPUs
    max_grad_norm: float | None = 1.0  # gradient clipping, as the Hugging Face Trainer that LLaVA-Med uses
    max_steps: int | None = (
        None  # train this many optimizer steps in all (None: all epochs); sets the schedule
    )
    stop_after: int | None = None  # end this run at this step, schedule unchanged (resume later to go on)
    save_every: int | None = None  # steps between checkpoints; None saves only the last step


@dataclass
class LlavaTrainResult:
    """Loss and learning rate per optimizer step, and where the checkpoints went."""

    losses: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    steps: int = 0  # optimizer steps done, those before a resume included
    total_steps: int = 0
    start_step: int = 0  # the step a resumed run started from (0 for a fresh run)
    seconds: float = 0.0
    num_processes: int = 1
    checkpoints: list[str] = field(default_factory=list)

    def history(self) -> list[dict]:
        return [
            {"step": step, "epoch": epoch, "loss": loss, "learning_rate": rate}
            for step, (epoch, loss, rate) in enumerate(zip(self.epochs, self.losses, self.learning_rates), 1)
        ]


def trainable_names(model: nn.Module) -> list[str]:
    """Return the names of the parameters that require gradients, in model order."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def make_scheduler(optimizer, total_steps: int, options: LlavaTrainOptions):
    """Return a linear-warmup scheduler that then decays with a cosine (or stays constant)."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    warmup = math.ceil(options.warmup_ratio * total_steps)
    if options.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if options.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise MedlnkitError(f"unknown scheduler {options.scheduler!r}: use 'cosine' or 'constant'")


def check_labels(batch: dict[str, torch.Tensor]) -> None:
    """Raise DataError when no position of the batch has a label: its loss would be NaN or zero."""
    if not bool((batch["labels"] != IGNORE_INDEX).any()):
        raise DataError(
            "every label of this batch is masked (-100), so it has no answer token to train on: check "
            "the collator's prompt template and answer truncation"
        )


def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the mean cross-entropy of the labelled tokens of a left-padded batch.

    Equals the model's own causal-LM loss, but the LM head runs on the last positions only
    (``logits_to_keep``), where left padding puts every answer; on SmolLM2 the 49,153-row head is
    about a fifth of the compute of a full forward pass.
    """
    check_labels(batch)
    labels = batch["labels"]
    window = answer_window(labels)
    keep = min(window + 1, labels.shape[1])
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits
    # The logits at position t predict the token at t + 1.
    predicted = logits[:, :-1].float()
    targets = labels[:, labels.shape[1] - predicted.shape[1] :]
    return nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


# --- Checkpoints ---------------------------------------------------------------------------------


def save_trainable(
    model: nn.Module,
    path: Path,
    names: Sequence[str] | None = None,
    metadata: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write the trainable parameters (or ``names``) of a model to one safetensors file.

    ``state_dict`` is a full state dict to read from (under FSDP, the one accelerate gathers).
    """
    from safetensors.torch import save_file

    names = list(names) if names is not None else trainable_names(model)
    if not names:
        raise MedlnkitError("no parameter is trainable: there is nothing to save")
    source = state_dict if state_dict is not None else dict(model.named_parameters())
    tensors = {name: source[name].detach().to("cpu").contiguous() for name in names}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def load_trainable(model: nn.Module, path: Path) -> dict[str, str]:
    """Copy the tensors of a trainable-parameter checkpoint into a model; return its metadata.

    The model must already carry the same paradigm (LoRA or prefix parameters included): every
    trainable parameter must be in the file and every tensor of the file must be trainable, else a
    MedlnkitError names the differences.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / TRAINABLE_FILE
    if not path.exists():
        raise MedlnkitError(
            f"checkpoint file {path} not found: pass a checkpoint folder or its {TRAINABLE_FILE}"
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    params = dict(model.named_parameters())
    unknown = sorted(k for k in tensors if k not in params)
    frozen = sorted(k for k in tensors if k in params and not params[k].requires_grad)
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in tensors)
    if unknown or frozen or missing:
        raise MedlnkitError(
            f"checkpoint {path} does not fit this model's paradigm (checkpoint paradigm "
            f"{metadata.get('paradigm', 'unknown')}): unknown {unknown[:3]}, frozen here {frozen[:3]}, "
            f"missing {missing[:3]}. Apply the checkpoint's paradigm to a fresh model first"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise MedlnkitError(
                    f"checkpoint tensor {name} has shape {tuple(tensor.shape)} but the model expects "
                    f"{tuple(params[name].shape)}: the checkpoint comes from another model configuration"
                )
            params[name].copy_(tensor.to(params[name].dtype))
    return metadata


def latest_checkpoint(folder: Path) -> Path | None:
    """Return the ``checkpoint-<step>`` folder with the highest step under ``folder``, or None."""
    candidates = []
    for path in Path(folder).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / STATE_FILE).exists():
            candidates.append((int(suffix), path))
    return max(candidates)[1] if candidates else None


def _save_checkpoint(
    accelerator, model, optimizer, scheduler, folder: Path, names, result: LlavaTrainResult, extra: dict
) -> Path:
    from accelerate.utils import DistributedType

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    state_dict = accelerator.get_state_dict(model) if fsdp else None
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {
            "step": result.steps,
            **{k: v for k, v in extra.items() if isinstance(v, (str, int, float))},
        }
        save_trainable(unwrapped, folder / TRAINABLE_FILE, names, metadata, state_dict)
        if not fsdp:
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        # NOTE: under FSDP the optimizer state is sharded and not saved; a resumed FSDP run
        # restarts AdamW's moments while weights, step count and schedule continue.
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        state = {
            "step": result.steps,
            "total_steps": result.total_steps,
            "history": result.history(),
            **extra,
        }
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
    accelerator.wait_for_everyone()
    return folder


# --- The loop ------------------------------------------------------------------------------------


def _make_accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # LLaVA skips the vision layers after vision_feature_layer, so paradigms that train the vision
    # tower have trainable parameters without gradients, which DDP rejects unless it searches for them.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])


def train_llava(
    model: nn.Module,
    records: Sequence,
    collate: Callable[[Sequence], dict[str, torch.Tensor]],
    settings: TrainSettings,
    options: LlavaTrainOptions = LlavaTrainOptions(),
    accelerator=None,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    extra_state: dict | None = None,
) -> LlavaTrainResult:
    """Fine-tune the parameters with ``requires_grad`` of a LLaVA model on VQA records.

    ``collate`` turns a list of records into a batch with labels (a ``LlavaCollator``).
    ``settings.batch_size`` is per process. With ``checkpoint_dir``, checkpoints are written every
    ``options.save_every`` steps and after the last step. ``resume_from`` (a checkpoint folder)
    restores the trainable parameters, optimizer, schedule and step count, then continues.
    ``progress(step, total_steps, loss)`` is called after every step on every process.
    Raises ValueError when nothing trains or a loss is not finite, DataError for a batch without
    labels. Returns the loss history; the model is left in eval mode.
    """
    from torch.utils.data import DataLoader

    names = trainable_names(model)
    if not names:
        raise ValueError("no parameter is trainable: check the paradigm")
    if not records:
        raise ValueError("the training split is empty")
    accelerator = accelerator or _make_accelerator()
    if options.tf32 and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matrix products, as the study enables
    if settings.threads:
        torch.set_num_threads(settings.threads)
    seed_everything(settings.seed)

    def epoch_loader(epoch: int):
        # One seeded order per epoch, so a resumed run gets the batches the uninterrupted run would get.
        order = torch.randperm(
            len(records), generator=torch.Generator().manual_seed(settings.seed + epoch)
        ).tolist()
        loader = DataLoader([records[i] for i in order], batch_size=settings.batch_size, collate_fn=collate)
        return accelerator.prepare_data_loader(loader)

    steps_per_epoch = len(epoch_loader(1))
    total_steps = steps_per_epoch * settings.epochs
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)

    result = LlavaTrainResult(total_steps=total_steps, num_processes=accelerator.num_processes)
    extra = dict(extra_state or {})
    if resume_from is not None:
        metadata = load_trainable(model, resume_from)
        state = json.loads((Path(resume_from) / STATE_FILE).read_text())
        for row in state["history"]:
            result.losses.append(row["loss"])
            result.epochs.append(row["epoch"])
            result.learning_rates.append(row["learning_rate"])
        result.steps = result.start_step = int(state["step"])
        logger.info(
            "resuming from %s at step %d (paradigm %s)", resume_from, result.steps, metadata.get("paradigm")
        )

    model = accelerator.prepare(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = accelerator.prepare(
        torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    )
    # The scheduler is stepped by hand once per optimizer step; accelerate's wrapper would step it
    # once per process.
    scheduler = make_scheduler(optimizer.optimizer, total_steps, options)
    if resume_from is not None:
        resume = Path(resume_from)
        if (resume / "optimizer.pt").exists():
            optimizer.load_state_dict(
                torch.load(resume / "optimizer.pt", map_location="cpu", weights_only=True)
            )
        scheduler.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))

    unwrapped = accelerator.unwrap_model(model)
    from medlnkit.models.llava import check_batch

    model.train()
    started = time.perf_counter()
    done = result.steps >= total_steps or (
        options.stop_after is not None and result.steps >= options.stop_after
    )
    for epoch in range(1, settings.epochs + 1):
        if done:
            break
        first_step = (epoch - 1) * steps_per_epoch
        if result.steps >= first_step + steps_per_epoch:
            continue  # finished before the resume
        loader = epoch_loader(epoch)
        if result.steps > first_step:
            loader = accelerator.skip_first_batches(loader, result.steps - first_step)
        for batch in loader:
            check_batch(unwrapped, batch)
            loss = answer_loss(model, batch)
            if not torch.isfinite(loss):
                raise ValueError(
                    f"loss became {loss.item()} at step {result.steps + 1}: lower the learning rate"
                )
            accelerator.backward(loss)
            if options.max_grad_norm:
                accelerator.clip_grad_norm_(params, options.max_grad_norm)
            optimizer.step()
            result.learning_rates.append(scheduler.get_last_lr()[0])
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            result.losses.append(accelerator.reduce(loss.detach(), "mean").item())
            result.epochs.append(epoch)
            if progress is not None:
                progress(result.steps, total_steps, result.losses[-1])
            last = result.steps >= total_steps or (
                options.stop_after is not None and result.steps >= options.stop_after
            )
            if checkpoint_dir is not None and (
                last or (options.save_every and result.steps % options.save_every == 0)
            ):
                folder = Path(checkpoint_dir) / f"checkpoint-{result.steps}"
                _save_checkpoint(
                    accelerator, model, optimizer, scheduler, folder, names, result, {**extra, "epoch": epoch}
                )
                result.checkpoints.append(str(folder))
            if last:
                done = True
                break
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


# --- Command line --------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m medlnkit.llava_training", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", default="cpu", help="smoke, cpu or paper (model and training settings)")
    parser.add_argument("--paradigm", default="F,F,LN,F", help="states of vision,connector,llm,lm_head")
    parser.add_argument(
        "--data-dir", default=None, help="VQA-RAD or Slake folder (default: the embedded sample)"
    )
    parser.add_argument("--out", required=True, help="folder for checkpoints, losses.csv and summary.json")
    parser.add_argument(
        "--max-train", type=int, default=None, help="training pairs to use (default: the profile's)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps in all (sets the schedule)"
    )
    parser.add_argument(
        "--stop-after", type=int, default=None, help="end this run at this step; resume to go on"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="examples per process and step")
    parser.add_argument("--save-every", type=int, default=None, help="optimizer steps between checkpoints")
    parser.add_argument(
        "--resume", default=None, help="checkpoint folder to resume from, or 'latest' in --out"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Train one paradigm from the command line and write ``summary.json`` under ``--out``."""
    from dataclasses import replace

    from medlnkit.data.sources import load_vqa_splits
    from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS, build_llava
    from medlnkit.profiles import get_profile
    from medlnkit.tuning import apply_paradigm

    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    profile = get_profile(args.profile)
    settings = profile.llava_train
    if args.batch_size:
        settings = replace(settings, batch_size=args.batch_size)
    out = Path(args.out)
    accelerator = _make_accelerator()
    splits = load_vqa_splits(
        Path(args.data_dir) if args.data_dir else None,
        max_train=args.max_train or settings.max_train_examples, max_test=1, seed=settings.seed,
    )  # fmt: skip
    bundle = build_llava(profile.llava_model, seed=settings.seed)
    plan = apply_paradigm(bundle.model, args.paradigm, "llava", lora=LORA_SETTINGS, prefix=PREFIX_SETTINGS)
    collate = bundle.collator(settings.max_question_tokens, settings.max_answer_tokens)
    resume = None
    if args.resume == "latest":
        resume = latest_checkpoint(out)
    elif args.resume:
        resume = Path(args.resume)
    options = LlavaTrainOptions(
        max_steps=args.max_steps, stop_after=args.stop_after, save_every=args.save_every
    )
    extra = {"paradigm": str(plan.paradigm), "profile": profile.name}
    result = train_llava(
        bundle.model, splits.train, collate, settings, options, accelerator=accelerator,
        checkpoint_dir=out, resume_from=resume, extra_state=extra,
    )  # fmt: skip
    # One checksum per process shows whether the processes ended with the same weights.
    checksum = sum(float(p.detach().double().sum()) for p in bundle.model.parameters() if p.requires_grad)
    checksums = accelerator.gather(
        torch.tensor([checksum], dtype=torch.float64, device=accelerator.device)
    ).tolist()
    summary = {
        "paradigm": str(plan.paradigm),
        "profile": profile.name,
        "num_processes": result.num_processes,
        "steps": result.steps,
        "start_step": result.start_step,
        "total_steps": result.total_steps,
        "losses": result.losses,
        "trainable_checksums": checksums,
        "checkpoints": result.checkpoints,
        "settings": asdict(settings),
    }
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.info(
            "trained %s for %d steps on %d processes: %s",
            plan.paradigm,
            result.steps,
            result.num_processes,
            out,
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()
