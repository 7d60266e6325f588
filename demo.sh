#!/usr/bin/env bash
# The main job on a CPU-only machine with no weights: sets up .venv, then baseline vs EasyCache on
# the tinywan text-to-video model through the Wan2.1 adapter, and compares the videos.
# ./demo.sh --diffusers runs the diffusers integration on a small WanPipeline instead.
# Other flags go to the demo (--prompt/--seed, --steps, --thresh, --ret_steps, ...).
set -euo pipefail
cd "$(dirname "$0")"
tools/setup_env.sh
demo=tools/demo.py
if [ "${1:-}" = "--diffusers" ]; then
  demo=tools/demo_diffusers.py
  shift
fi
OMP_NUM_THREADS=1 .venv/bin/python "$demo" "$@"
