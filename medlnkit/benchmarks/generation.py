"""Generation throughput: questions per second in batches against one question at a time.

Inputs are collated before the clock starts, so both figures time the model only: for MISS the
vision encoder, the question encoder and greedy decoding (``medlnkit.models.miss.generate_answers``),
for LLaVA the vision tower, the prompt and greedy decoding (``medlnkit.models.llava.generate_answers``).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import torch

from medlnkit.data.collate import MissCollator, PixelCache
from medlnkit.data.sample import sample_records
from medlnkit.models.miss import build_miss, generate_answers
from medlnkit.profiles import get_profile
from medlnkit.training import batches

logger = logging.getLogger(__name__)


def _answer_all(answer: Callable[[dict], list[str]], inputs: list[dict]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    answers = []
    for batch in inputs:
        answers.extend(answer(batch))
    return time.perf_counter() - started, answers


def _compare(answer: Callable[[dict], list[str]], batched: list[dict], single: list[dict], rounds: int) -> dict:
    """Time both ways after one warm-up call each, alternating for ``rounds`` rounds."""
    _answer_all(answer, batched[:1])
    _answer_all(answer, single[:1])
    batched_seconds, single_seconds = [], []
    for _ in range(rounds):
        seconds, single_answers = _answer_all(answer, single)
        single_seconds.append(seconds)
        seconds, batched_answers = _answer_all(answer, batched)
        batched_seconds.append(seconds)
    count = len(single)
    batched_rate = count / statistics.median(batched_seconds)
    single_rate = count / statistics.median(single_seconds)
    return {
        "questions": count,
        "rounds": rounds,
        "batched_seconds": batched_seconds,
        "sequential_seconds": single_seconds,
        "batched_questions_per_second": batched_rate,
        "sequential_questions_per_second": single_rate,
        "batched_over_sequential": batched_rate / single_rate,
        "answers_identical": sum(a == b for a, b in zip(batched_answers, single_answers)),
        "torch_threads": torch.get_num_threads(),
    }


def _test_records(questions: int) -> list:
    records = sample_records("test")[:questions]
    if len(records) < questions:
        logger.warning("the sample's test split has %d questions, fewer than %d", len(records), questions)
    return records


def measure_miss_generation(profile: str, questions: int, batch_size: int, rounds: int) -> dict:
    """Time MISS answering the embedded sample's first ``questions`` test questions, batched and one by one.

    The result contains the median questions per second of each way, their ratio, and how many
    answers agree. Batched generation masks question padding, so the answers should be identical.
    """
    resolved = get_profile(profile)
    settings = resolved.miss_train
    bundle = build_miss(profile)
    bundle.model.eval()
    records = _test_records(questions)
    collator = MissCollator(
        bundle.tokenizer,
        PixelCache(bundle.image_size, bundle.image_mean, bundle.image_std),
        max_question_tokens=settings.max_question_tokens,
    )
    batched = [collator.questions(chunk) for chunk in batches(records, batch_size, shuffle=False)]
    single = [collator.questions([record]) for record in records]

    def answer(batch: dict) -> list[str]:
        return generate_answers(bundle.model, bundle.tokenizer, **batch, max_new_tokens=settings.max_answer_tokens)

    result = {
        "model": f"MISS {profile} profile: {resolved.description}",
        "batch_size": batch_size,
        "max_new_tokens": settings.max_answer_tokens,
    }
    result.update(_compare(answer, batched, single, rounds))
    return result


def measure_llava_generation(profile: str, questions: int, batch_size: int, rounds: int) -> dict:
    """Time LLaVA answering the sample's first ``questions`` test questions, batched (left-padded) and one by one."""
    from medlnkit.models.llava import build_llava
    from medlnkit.models.llava import generate_answers as generate_llava_answers

    settings = get_profile(profile).llava_train
    bundle = build_llava(profile)
    bundle.model.eval()
    records = _test_records(questions)
    collator = bundle.collator(settings.max_question_tokens, settings.max_answer_tokens)
    batched = [collator.prompts(chunk) for chunk in batches(records, batch_size, shuffle=False)]
    single = [collator.prompts([record]) for record in records]

    def answer(batch: dict) -> list[str]:
        return generate_llava_answers(bundle, batch, collator, settings.max_answer_tokens)

    result = {
        "model": f"LLaVA {profile} profile: " + "; ".join(f"{g}: {s}" for g, s in bundle.weight_sources.items()),
        "batch_size": batch_size,
        "max_new_tokens": settings.max_answer_tokens,
    }
    result.update(_compare(answer, batched, single, rounds))
    return result
