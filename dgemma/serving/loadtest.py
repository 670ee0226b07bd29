"""Load test / benchmark for `dgemma serve`: throughput and p50/p99 latency at several concurrency levels.

    python -m dgemma.serving.loadtest --model /path/to/ckpt           # starts a server on a loopback port
    python -m dgemma.serving.loadtest --url http://127.0.0.1:8000 --model-name code

Each client sends `--requests` completions one after another (mixed max_tokens, every other one streamed).
Prints a markdown table: clients, requests, errors, tokens/s, requests/s, p50/p99 latency, p50 TTFT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_batch: int, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "dgemma.cli", "serve", "--model", model, "--port", str(port),
                             "--max-batch", str(max_batch), "--max-queue", "1024", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy")


async def one(client: httpx.AsyncClient, model: str, i: int, max_tokens: int, stream: bool, steps: int):
    body = {"model": model, "prompt": f"def function_{i}(x):\n    ", "max_tokens": max_tokens, "seed": i,
            "denoising_steps": steps, "stream": stream}
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    if stream:
        body["stream_options"] = {"include_usage": True}
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return None
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["text"] and ttft is None:
                    ttft = time.perf_counter() - t0
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    else:
        r = await client.post("/v1/completions", json=body)
        if r.status_code != 200:
            return None
        tokens = r.json()["usage"]["completion_tokens"]
    lat = time.perf_counter() - t0
    return lat, ttft if ttft is not None else lat, tokens


async def level(url: str, model: str, clients: int, per_client: int, lengths: list[int], steps: int):
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def worker(c):
            out = []
            for k in range(per_client):
                i = c * per_client + k
                out.append(await one(client, model, i, lengths[i % len(lengths)], i % 2 == 1, steps))
            return out
        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    ok = [r for r in results if r is not None]
    lats = sorted(r[0] for r in ok)
    ttfts = sorted(r[1] for r in ok)

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok),
            "tok_s": sum(r[2] for r in ok) / wall, "req_s": len(ok) / wall, "p50": statistics.median(lats),
            "p99": pct(lats, 0.99), "ttft50": statistics.median(ttfts)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="an already running server (default: start one)")
    p.add_argument("--model", default=None, help="checkpoint directory for the server this script starts")
    p.add_argument("--model-name", default=None, help="model id (default: the directory name)")
    p.add_argument("--clients", default="1,4,16,32")
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-tokens", default="16,48,96", help="cycled per request")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per canvas")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--server-args", default="", help="extra `dgemma serve` arguments")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="also save the table as bench/results/NAME.json for BENCHMARKS.md")
    args = p.parse_args(argv)
    proc = None
    url = args.url
    if url is None:
        if not args.model:
            p.error("give --url or --model")
        port = free_port()
        proc = start_server(args.model, port, args.max_batch, args.server_args.split())
        url = f"http://127.0.0.1:{port}"
    name = args.model_name or httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    lengths = [int(x) for x in args.max_tokens.split(",")]
    try:
        print(f"# {url} model={name} steps={args.steps} max_tokens={lengths} cpu_count={os.cpu_count()}")
        print("| clients | requests | errors | tokens/s | requests/s | p50 latency (s) | p99 latency (s) | p50 TTFT (s) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows = []
        for c in [int(x) for x in args.clients.split(",")]:
            r = asyncio.run(level(url, name, c, args.requests, lengths, args.steps))
            rows.append([r["clients"], r["requests"], r["errors"], f"{r['tok_s']:.1f}", f"{r['req_s']:.2f}",
                         f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['ttft50']:.2f}"])
            print("| " + " | ".join(map(str, rows[-1])) + " |", flush=True)
        if args.save:
            from ..bench.report import save_table
            save_table(args.save, f"Server under load (`dgemma serve`, model {name})",
                       "python -m dgemma.serving.loadtest " + " ".join(sys.argv[1:] if argv is None else argv),
                       ["clients", "requests", "errors", "tokens/s", "requests/s", "p50 latency (s)",
                        "p99 latency (s)", "p50 time to first text (s)"], rows,
                       text=(f"Each client sends {args.requests} completions one after another over loopback "
                             f"(max_tokens cycling {lengths}, every other request streamed), at most {args.steps} "
                             f"denoising steps per canvas, continuous batching up to {args.max_batch} rows."))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
