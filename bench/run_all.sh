#!/usr/bin/env bash
# Regenerate every number in BENCHMARKS.md on this machine (about 8 minutes on a 2-core CPU; add ~10 minutes
# with a CUDA GPU for bench/cuda_26b.py). Each step saves a JSON result under bench/results/ and rewrites
# BENCHMARKS.md and bench/plots/ from all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
dgemma bench --model small --reps 3 --reference-compile --scaling --budget 240 --markdown
dgemma bench --model small --batch 4 --reps 3 --name small-cpu-fp32-b4 --markdown
python bench/ab_cpu.py --rounds 6
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    python bench/cuda_26b.py
fi
dgemma bench --markdown-only
