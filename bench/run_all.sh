#!/usr/bin/env bash
# Regenerate every number in BENCHMARKS.md on this machine (about 45 minutes on a 2-core CPU; add ~10 minutes with
# a CUDA GPU for bench/cuda_26b.py). Each step saves a JSON result under bench/results/ and BENCHMARKS.md and
# bench/plots/ are rewritten from all of them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
dgemma bench --model small --reps 3 --reference-compile --scaling --budget 240 --save
dgemma bench --model small --reps 3 --compile --name small-cpu-fp32-compiled --save
dgemma bench --model small --batch 4 --reps 3 --name small-cpu-fp32-b4 --save
dgemma bench --model tiny --reps 5 --threads 1 --save
dgemma bench --model tiny --reps 5 --threads 1 --compile --name tiny-cpu-fp32-compiled --save
python bench/ab_cpu.py --rounds 6
python bench/kv_cache.py
python bench/sampler_memory.py
python bench/long_prompt.py
python bench/compile_start.py
python -m dgemma.tasks.code_eval --tasks 40 --save code-infill
python -m dgemma.bench.structured --threads 2 --save structured
python -m dgemma.serving.loadtest --model dgemma/assets/code --save serve-code
python bench/prefix_reuse.py
python -m dgemma.serving.loadtest --model dgemma/assets/code --duration 600 --clients 8 --max-batch 8 --save serve-soak
dgemma sudoku --eval 1000 --ar-model bench/baselines/sudoku-ar --save sudoku --threads 2 --batch 100
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    python bench/cuda_26b.py
fi
dgemma bench --markdown-only
