"""Generation throughput: questions per second in batches against one question at a time.

Inputs are collated before the clock starts, so both figures time the model only: the vision
encoder, the question encoder and greedy decoding (``medlnkit.models.miss.generate_answers``).
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

from medlnkit.data.collate import MissCollator, PixelCache
from medlnkit.data.sample import sample_records
from medlnkit.models.miss import build_miss, generate_answers
from medlnkit.profiles import get_profile
from medlnkit.training import batches

logger = logging.getLogger(__name__)


def _answer_all(model, tokenizer, inputs: list[dict], max_new_tokens: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    answers = []
    for batch in inputs:
        answers.extend(generate_answers(model, tokenizer, **batch, max_new_tokens=max_new_tokens))
    return time.perf_counter() - started, answers


def measure_miss_generation(profile: str, questions: int, batch_size: int, rounds: int) -> dict:
    """Time MISS answering ``questions`` test questions of the embedded sample, batched and one by one.

    The two ways alternate for ``rounds`` rounds after one warm-up call of each; the result contains
    the median questions per second of each, their ratio, and how many answers agree (batched
    generation masks question padding, so the answers should be identical).
    """
    resolved = get_profile(profile)
    settings = resolved.miss_train
    bundle = build_miss(profile)
    bundle.model.eval()
    records = sample_records("test")[:questions]
    if len(records) < questions:
        logger.warning("the sample's test split has %d questions, fewer than %d", len(records), questions)
    collator = MissCollator(
        bundle.tokenizer,
        PixelCache(bundle.image_size, bundle.image_mean, bundle.image_std),
        max_question_tokens=settings.max_question_tokens,
    )
    batched = [collator.questions(chunk) for chunk in batches(records, batch_size, shuffle=False)]
    single = [collator.questions([record]) for record in records]
    max_new_tokens = settings.max_answer_tokens

    _answer_all(bundle.model, bundle.tokenizer, batched[:1], max_new_tokens)
    _answer_all(bundle.model, bundle.tokenizer, single[:1], max_new_tokens)
    batched_seconds, single_seconds = [], []
    for _ in range(rounds):
        seconds, single_answers = _answer_all(bundle.model, bundle.tokenizer, single, max_new_tokens)
        single_seconds.append(seconds)
        seconds, batched_answers = _answer_all(bundle.model, bundle.tokenizer, batched, max_new_tokens)
        batched_seconds.append(seconds)

    count = len(records)
    batched_rate = count / statistics.median(batched_seconds)
    single_rate = count / statistics.median(single_seconds)
    return {
        "model": f"MISS {profile} profile: {resolved.description}",
        "questions": count,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "rounds": rounds,
        "batched_seconds": batched_seconds,
        "sequential_seconds": single_seconds,
        "batched_questions_per_second": batched_rate,
        "sequential_questions_per_second": single_rate,
        "batched_over_sequential": batched_rate / single_rate,
        "answers_identical": sum(a == b for a, b in zip(batched_answers, single_answers)),
        "torch_threads": torch.get_num_threads(),
    }
