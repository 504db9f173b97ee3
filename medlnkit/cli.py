"""The ``medlnkit`` command line: run, count, data check, score and bench.

Each subcommand parses its options here and calls one library function, so every command is also
usable from Python. Errors the user can fix (MedlnkitError, ValueError from input checks) print one
line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medlnkit.errors import MedlnkitError

PROFILES = ("smoke", "cpu", "paper")
DATASETS = ("slake", "vqa-rad", "iu-xray", "mimic-cxr")


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="execute the notebooks with papermill into one run folder",
        description="Execute the numbered notebooks in order with papermill and write "
        "runs/<date>-<profile>/ with config.yaml, env.json, notebooks/, tables/ and figures/.",
    )
    parser.add_argument("--profile", default="cpu", help="smoke, cpu (default) or paper")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder of a benchmark in its official layout (VQA-RAD or Slake); "
        "the default is the embedded real-image sample",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default: runs/<date>-<profile>)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NOTEBOOK",
        help="run only these notebooks, by name or number (for example 02_miss_tuning or 02)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="hide progress bars (the default when CI is set)"
    )


def _add_count(subparsers) -> None:
    parser = subparsers.add_parser(
        "count",
        help="count total, trainable and PEFT parameters of a paradigm without weights",
        description="Build the architecture on the meta device (no weights, no download) and "
        "count its parameters under a paradigm.",
    )
    parser.add_argument("--model", required=True, help="miss or llava-med-v1")
    parser.add_argument("--paradigm", required=True, help='for example "T,LN,T" or "F,F,LN,F"')
    parser.add_argument(
        "--convention",
        default="paper",
        help="paper (reproduces the published counts) or strict (clean separation of kinds)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_data(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect dataset folders")
    data_sub = parser.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser(
        "check", help="report what a dataset folder contains, split by split"
    )
    check.add_argument("--dataset", required=True, help=", ".join(DATASETS))
    check.add_argument("--root", required=True, type=Path, help="the dataset's folder")
    check.add_argument(
        "--open-images",
        action="store_true",
        help="decode every image fully, which finds truncated files (slower)",
    )


def _add_score(subparsers) -> None:
    parser = subparsers.add_parser("score", help="score JSON Lines predictions against references")
    parser.add_argument("--task", required=True, help="vqa or report")
    parser.add_argument("--predictions", required=True, type=Path, help='JSON Lines of {"id", "prediction"}')
    parser.add_argument("--references", required=True, type=Path, help="JSON Lines of references")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--allow-empty", action="store_true", help="score empty predictions as wrong instead of failing"
    )
    parser.add_argument(
        "--open-metric",
        default="exact",
        help="vqa only: exact (normalised exact match) or llava_med_recall (LLaVA-Med's token recall)",
    )
    parser.add_argument("--stemmer", action="store_true", help="report only: ROUGE-L with Porter stemming")


def _add_bench(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure step time, memory and artifact sizes")
    parser.add_argument(
        "--quick", action="store_true", help="MISS-base at 224 px instead of 480 px, and fewer repeats"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--markdown", action="store_true", help="print Markdown tables, as in docs/benchmarks.md")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="results file (JSON; default bench/results/bench-DATE.json)"
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="FILE",
        help="print the tables of an earlier results file instead of measuring",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlnkit",
        description="Fine-tune medical vision-language models by LayerNorm, Attention, FFN, "
        "LoRA or Prefix tuning, and reproduce the study's tables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run(subparsers)
    _add_count(subparsers)
    _add_data(subparsers)
    _add_score(subparsers)
    _add_bench(subparsers)
    return parser


def _command_run(args) -> int:
    from medlnkit.runner import run_notebooks

    run_dir = run_notebooks(
        profile=args.profile, data_dir=args.data_dir, out=args.out, only=args.only, quiet=args.quiet
    )
    print(f"run folder: {run_dir}")
    return 0


def _command_count(args) -> int:
    from medlnkit.counting import count_parameters_for, format_count

    record = count_parameters_for(args.model, args.paradigm, convention=args.convention)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        print(format_count(record))
    return 0


def _command_data(args) -> int:
    from medlnkit.data.check import check_dataset

    print(check_dataset(args.dataset, args.root, open_images=args.open_images))
    return 0


def _command_score(args) -> int:
    from medlnkit.evaluation.score import format_scores, score_files

    scores = score_files(
        args.task,
        args.predictions,
        args.references,
        allow_empty=args.allow_empty,
        open_metric=args.open_metric,
        use_stemmer=args.stemmer,
    )
    print(json.dumps(scores, indent=2) if args.json else format_scores(scores))
    return 0


def _command_bench(args) -> int:
    from medlnkit.bench import format_bench, format_markdown, load_results, run_bench

    if args.render is not None:
        if args.quick or args.out is not None:
            raise MedlnkitError(
                "--render prints a stored results file and measures nothing: drop --quick and --out, "
                "or drop --render to run a new measurement"
            )
        results = load_results(args.render)
    else:
        results = run_bench(quick=args.quick, out=args.out)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    formatter = format_markdown if args.markdown else format_bench
    try:
        text = formatter(results)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if args.render is None:
            raise
        # A hand-edited or damaged file can pass load_results and still lack a field deeper inside.
        raise MedlnkitError(
            f"results file {args.render} has an unexpected field ({type(error).__name__}: {error}): "
            "render a file that medlnkit bench wrote, unedited"
        ) from error
    print(text)
    return 0


_COMMANDS = {
    "run": _command_run,
    "count": _command_count,
    "data": _command_data,
    "score": _command_score,
    "bench": _command_bench,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status (0 success, 1 failure, 2 invalid input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return _COMMANDS[args.command](args)
    except MedlnkitError as error:
        print(f"medlnkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medlnkit {args.command}: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
