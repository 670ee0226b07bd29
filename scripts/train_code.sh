#!/usr/bin/env bash
# Reproduce the bundled code model (issue #6): block-diffusion pretraining on the Python standard library
# (held-out modules excluded), packed sequences of a random 1..64-token prefix + 3 canvases of 64, every canvas
# supervised, two threads: 87 minutes on a 2-core CPU (2026-11-24), held-out losses in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MC='{"vocab_size":4096,"hidden_size":256,"intermediate_size":384,"num_layers":6,"num_heads":4,"num_kv_heads":2,"head_dim":64,"global_head_dim":128,"num_global_kv_heads":1,"sliding_window":256,"layer_types":["sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","full_attention"],"num_experts":8,"top_k_experts":2,"moe_intermediate_size":128,"canvas_length":64,"max_position_embeddings":4096}'
OUT=${OUT:-runs/code}
mkdir -p "$OUT"
python -m dgemma.training.cli --data stdlib --tokenizer dgemma/assets/code/tokenizer.json --init tiny --model-config "$MC" \
  --canvases 3 --steps ${STEPS:-2800} --batch-size 8 --lr 1e-3 --warmup 100 --supervise all --encoder-loss-weight 1.0 \
  --threads 2 --seed 0 --eval-every 200 --eval-batches 4 --log-every 10 --save-every-min 5 \
  --out "$OUT" --export ${EXPORT:-dgemma/assets/code} "$@"
