#!/usr/bin/env bash
# Reproduce the bundled code model (issue #6): block-diffusion pretraining on the Python standard library
# (held-out modules excluded), packed sequences of a random 1..64-token prefix + 3 canvases of 64, every canvas
# supervised, two threads on a 2-core CPU. The bundled weights came from three runs of this script, each
# continuing the last one's checkpoint (optimizer and random state included):
#   bash scripts/train_code.sh                                         # steps 1-2800, 87 min (2026-11-24)
#   STEPS=6000 bash scripts/train_code.sh --resume --stop-after 3330   # schedule stretched; stopped at 3330
#   STEPS=5200 bash scripts/train_code.sh --resume                     # steps 3331-5200
# About 2 h 40 min of training in all; held-out losses in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MC='{"vocab_size":4096,"hidden_size":256,"intermediate_size":384,"num_layers":6,"num_heads":4,"num_kv_heads":2,"head_dim":64,"global_head_dim":128,"num_global_kv_heads":1,"sliding_window":256,"layer_types":["sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","full_attention"],"num_experts":8,"top_k_experts":2,"moe_intermediate_size":128,"canvas_length":64,"max_position_embeddings":4096}'
OUT=${OUT:-runs/code}
mkdir -p "$OUT"
python -m dgemma.training.cli --data stdlib --tokenizer dgemma/assets/code/tokenizer.json --init tiny --model-config "$MC" \
  --canvases 3 --steps ${STEPS:-2800} --batch-size 8 --lr 1e-3 --warmup 100 --supervise all --encoder-loss-weight 1.0 \
  --threads 2 --seed 0 --eval-every 200 --eval-batches 4 --log-every 10 --save-every-min 5 \
  --out "$OUT" --export ${EXPORT:-dgemma/assets/code} "$@"
