#!/usr/bin/env bash
# Run the test suite on the CPU (no GPU, no weights, no network); sets up .venv first.
# Extra arguments go to pytest, e.g. ./test.sh -k policy
set -euo pipefail
cd "$(dirname "$0")"
tools/setup_env.sh
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests "$@"
