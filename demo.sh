#!/usr/bin/env bash
# The main job on a CPU-only machine with no weights: sets up .venv, then runs the Wan2.1
# drop-in script baseline vs EasyCache on a tiny stand-in model and compares the videos.
# Flags go to tools/demo.py (--prompt, --seed, --steps, --thresh, ...).
set -euo pipefail
cd "$(dirname "$0")"
tools/setup_env.sh
OMP_NUM_THREADS=1 .venv/bin/python tools/demo.py "$@"
