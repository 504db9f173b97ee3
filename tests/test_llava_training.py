"""The accelerate training loop: answer loss, schedule, checkpoints, resume, two processes, FSDP config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from medlnkit.data.llava_collate import IGNORE_INDEX
from medlnkit.errors import DataError, MedlnkitError
from medlnkit.llava_training import (
    LlavaTrainOptions,
    answer_loss,
    latest_checkpoint,
    load_trainable,
    make_scheduler,
    train_llava,
)
from medlnkit.models.llava import LORA_SETTINGS, PREFIX_SETTINGS, build_llava
from medlnkit.profiles import TrainSettings
from medlnkit.tuning import apply_paradigm
from tests.helpers import square_records

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = ROOT / "medlnkit" / "resources" / "accelerate"
NO_WARMUP = LlavaTrainOptions(warmup_ratio=0.0, scheduler="constant")


@pytest.fixture(scope="module")
def base():
    return build_llava("smoke", seed=0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return square_records(tmp_path_factory.mktemp("squares"), count=16)


def tuned(base, paradigm: str):
    bundle = base.copy()
    plan = apply_paradigm(bundle.model, paradigm, "llava", lora=LORA_SETTINGS, prefix=PREFIX_SETTINGS)
    return bundle, plan


def test_answer_loss_equals_model_loss(base, records):
    batch = base.collator()(records[:4])
    with torch.no_grad():
        expected = base.model(**batch).loss
        actual = answer_loss(base.model, batch)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_masked_batch_raises(base, records):
    bundle, _ = tuned(base, "F,F,LN,F")
    collate = bundle.collator()

    def masked(chunk):
        batch = collate(chunk)
        batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
        return batch

    with pytest.raises(DataError, match="masked"):
        train_llava(bundle.model, records[:4], masked, TrainSettings(epochs=1, batch_size=4))


def test_no_trainable_parameter_raises(base, records):
    bundle, _ = tuned(base, "F,F,F,F")
    with pytest.raises(ValueError, match="no parameter is trainable"):
        train_llava(bundle.model, records[:4], bundle.collator(), TrainSettings(epochs=1, batch_size=4))


def test_warmup_then_cosine():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
    scheduler = make_scheduler(optimizer, 100, LlavaTrainOptions())
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0  # 3 warmup steps = ceil(0.03 x 100)
    assert rates[3] == pytest.approx(2e-5)
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))
    assert rates[-1] < 1e-7
    assert rates[53] == pytest.approx(1e-5, rel=0.05)  # half-way through the cosine


def test_learning_rates_recorded(base, records):
    bundle, _ = tuned(base, "F,F,LN,F")
    settings = TrainSettings(epochs=1, batch_size=4, learning_rate=1e-3)
    result = train_llava(bundle.model, records[:16], bundle.collator(), settings)
    assert result.steps == result.total_steps == 4
    assert result.learning_rates[0] == 0.0
    assert result.learning_rates[1] == pytest.approx(1e-3)
    assert [row["step"] for row in result.history()] == [1, 2, 3, 4]


def test_checkpoint_reload_gives_equal_outputs(base, records, tmp_path):
    bundle, plan = tuned(base, "F,T,LN,T")
    settings = TrainSettings(epochs=1, batch_size=4, learning_rate=1e-2)
    result = train_llava(
        bundle.model, records[:8], bundle.collator(), settings, NO_WARMUP, checkpoint_dir=tmp_path
    )
    folder = Path(result.checkpoints[-1])
    assert folder == latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert {p.name for p in folder.iterdir()} == {
        "trainable.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "trainer_state.json",
    }

    from safetensors import safe_open

    with safe_open(str(folder / "trainable.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == plan.trainable
        assert handle.metadata()["step"] == "2"

    fresh, _ = tuned(base, "F,T,LN,T")
    batch = bundle.collator()(records[8:12])
    with torch.no_grad():
        untrained = fresh.model(**batch).logits
        load_trainable(fresh.model, folder)
        torch.testing.assert_close(fresh.model(**batch).logits, bundle.model(**batch).logits)
    assert not torch.allclose(untrained, fresh.model(**batch).logits)


def test_checkpoint_rejects_other_paradigm(base, records, tmp_path):
    bundle, _ = tuned(base, "F,F,LN,F")
    result = train_llava(
        bundle.model,
        records[:4],
        bundle.collator(),
        TrainSettings(epochs=1, batch_size=4),
        checkpoint_dir=tmp_path,
    )
    other, _ = tuned(base, "F,F,Attn,F")
    with pytest.raises(MedlnkitError, match="does not fit this model's paradigm"):
        load_trainable(other.model, result.checkpoints[-1])


def test_max_steps_sets_schedule(base, records):
    bundle, _ = tuned(base, "F,F,LN,F")
    result = train_llava(
        bundle.model,
        records[:16],
        bundle.collator(),
        TrainSettings(epochs=3, batch_size=4),
        LlavaTrainOptions(max_steps=5),
    )
    assert result.steps == result.total_steps == 5


def test_resume_continues_step_count(base, records, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=4, learning_rate=5e-3, seed=3)
    whole, _ = tuned(base, "F,T,LN,T")
    full = train_llava(whole.model, records[:8], whole.collator(), settings)

    first, _ = tuned(base, "F,T,LN,T")
    part = train_llava(
        first.model,
        records[:8],
        first.collator(),
        settings,
        LlavaTrainOptions(stop_after=3),
        checkpoint_dir=tmp_path,
    )
    assert part.steps == 3

    second, plan = tuned(base, "F,T,LN,T")
    resumed = train_llava(
        second.model, records[:8], second.collator(), settings, resume_from=latest_checkpoint(tmp_path)
    )
    assert resumed.start_step == 3
    assert resumed.steps == full.steps == 4
    assert resumed.losses[:3] == part.losses
    assert resumed.losses == pytest.approx(full.losses, rel=1e-4)
    for name in plan.trainable:
        torch.testing.assert_close(
            second.model.get_parameter(name), whole.model.get_parameter(name), atol=1e-5, rtol=1e-4
        )


def test_fsdp_config_wraps_llama_layers(base):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import FullyShardedDataParallelPlugin

    path = ACCELERATE_CONFIGS / "fsdp.yaml"
    cluster = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys
    assert cluster.distributed_type.value == "FSDP"
    fsdp = yaml.safe_load(path.read_text())["fsdp_config"]
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_use_orig_params"] is True
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"],
        sharding_strategy=fsdp["fsdp_sharding_strategy"],
        auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
        use_orig_params=fsdp["fsdp_use_orig_params"],
        state_dict_type=fsdp["fsdp_state_dict_type"],
    )
    plugin.set_auto_wrap_policy(base.model)
    wrapped = plugin.auto_wrap_policy.keywords["transformer_layer_cls"]
    assert {cls.__name__ for cls in wrapped} == {"LlamaDecoderLayer"}


def test_single_process_config_loads():
    from accelerate.commands.config.config_args import ClusterConfig

    cluster = ClusterConfig.from_yaml_file(str(ACCELERATE_CONFIGS / "single_process.yaml"))
    assert cluster.num_processes == 1


def _launch_two_processes(out: Path, *extra: str) -> dict:
    # accelerate launch runs several CPU processes only through mpirun; torchrun starts the same
    # gloo process group that accelerate reads from the environment.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])  # a free port, so parallel test runs do not collide
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
        "-m", "medlnkit.llava_training", "--profile", "smoke", "--paradigm", "F,T,LN,T",
        "--out", str(out), "--max-train", "12", "--batch-size", "2", *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_two_processes_train_and_resume(tmp_path):
    first = _launch_two_processes(tmp_path, "--stop-after", "2", "--save-every", "1")
    assert first["num_processes"] == 2
    # 12 pairs in batches of 2 per process: 3 steps per epoch.
    assert first["steps"] == 2
    assert first["total_steps"] == 3
    assert first["trainable_checksums"][0] == first["trainable_checksums"][1]
    assert (tmp_path / "checkpoint-1").is_dir()
    assert (tmp_path / "checkpoint-2").is_dir()

    resumed = _launch_two_processes(tmp_path, "--resume", "latest")
    assert resumed["start_step"] == 2
    assert resumed["steps"] == resumed["total_steps"] == 3
    assert resumed["losses"][:2] == first["losses"]
    assert resumed["trainable_checksums"][0] == resumed["trainable_checksums"][1]
    assert resumed["trainable_checksums"][0] != first["trainable_checksums"][0]
