"""How long `--compile` takes to be ready, in a first process (cold compiler caches) and in a second one (the
compiled kernels come from torch inductor's on-disk caches; the graphs are traced again). Each process imports
dgemma, loads the bundled code model and generates one canvas with `compile=True`; "ready" is when that first
generation has returned (compiling included), "steady" the same generation run again.

    python bench/compile_start.py        # saves bench/results/compile-start.json; `dgemma bench --markdown-only`
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from dgemma.bench.report import publish_table

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from dgemma import DiffusionGemma
model = DiffusionGemma.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([[2, 400, 500, 600, 700, 800, 900, 1000, 1100]])
L = model.config.canvas_length
loaded = time.perf_counter()
model.generate(ids, compile=True, seed=0, max_new_tokens=L, eos_token_id=[])
ready = time.perf_counter()
model.generate(ids, compile=True, seed=0, max_new_tokens=L, eos_token_id=[])
print(json.dumps({"load_s": loaded - t0, "ready_s": ready - t0, "steady_s": time.perf_counter() - ready}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(__import__("dgemma.serving").serving.default_model_dir()),
                   help="checkpoint directory or preset (default: the bundled code model)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as cache:  # empty compiler caches for the first process
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for which in ("first process (cold caches)", "second process"):
            out = subprocess.run([sys.executable, "-c", CHILD, args.model], env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"child failed: {out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append([which, f"{r['load_s']:.1f} s", f"{r['ready_s']:.1f} s", f"{r['steady_s']:.2f} s"])
    text = ("Wall time from the start of the process: import and load, then ready (the first compiled generation of "
            "one canvas has returned, compiling included), and that generation again. Goal: a second process ready "
            "in at most 30 s.")
    publish_table(not args.no_save, "compile-start", f"`compile=True` start-up, model {os.path.basename(args.model)}",
                  "python bench/compile_start.py", ["process", "import + load", "ready", "one canvas, steady"], rows,
                  text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
