"""Load test / benchmark for `dgemma serve`: throughput and p50/p99 latency at several concurrency levels.

    python -m dgemma.serving.loadtest --model /path/to/ckpt           # starts a server on a loopback port
    python -m dgemma.serving.loadtest --url http://127.0.0.1:8000 --model-name code

Each client sends `--requests` completions one after another (mixed max_tokens, every other one streamed).
Prints a markdown table: clients, requests, errors, tokens/s, requests/s, p50/p99 latency, p50 TTFT.

    python -m dgemma.serving.loadtest --model dgemma/assets/code --duration 600 --clients 8   # soak

`--duration` is a soak instead: the clients send mixed requests (completions, chat, infill, streamed and not,
three samplers) for that long; per minute it reports requests, errors, p50/p99 latency and the server's resident
memory, and at the end whether memory grew at most 5% after the first minute and the last minute's p99 stayed
within 1.5x of the second's.
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


SOAK_SAMPLERS = ("entropy", "confidence", "topk")


async def mixed(client: httpx.AsyncClient, model: str, i: int, steps: int) -> bool:
    """One request of the soak's mix, by `i`: completion, chat or infill, streamed or not, a sampler and a
    length. True when it succeeded (a 200, and a streamed one ended with [DONE] and no error event)."""
    kind, stream = ("completion", "chat", "infill")[i % 3], (i // 3) % 2 == 1
    extra = {"seed": i, "denoising_steps": steps, "sampler": SOAK_SAMPLERS[(i // 6) % 3], "stream": stream}
    if kind == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": f"task {i % 11}"}],
                                              "max_tokens": (16, 48)[i % 2]}
    elif kind == "infill":
        path, body = "/infill", {"input_prefix": f"def f_{i % 11}(x):\n", "input_suffix": "\n\nprint(f(1))\n",
                                 "n_predict": 12, "seed": i, "stream": stream}
    else:
        path, body = "/v1/completions", {"prompt": f"def function_{i % 11}(x):\n    ", "max_tokens": (16, 48, 96)[i % 3]}
    if path != "/infill":
        body = {"model": model, **body, **extra}
    try:
        if not stream:
            return (await client.post(path, json=body)).status_code == 200
        async with client.stream("POST", path, json=body) as r:
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        return r.status_code == 200 and bool(lines) and not any('"error"' in line[:12] for line in lines) and (
            path == "/infill" or lines[-1] == "data: [DONE]")
    except httpx.HTTPError:
        return False


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


async def soak(url: str, model: str, clients: int, duration: float, steps: int, pid: int | None):
    """Mixed load for `duration` seconds; per minute (requests, errors, latencies, resident MiB at its end)."""
    t0 = time.perf_counter()
    minutes: list[dict] = []
    counter = iter(range(10**9))

    def bucket(t):
        m = int((t - t0) // 60)
        while len(minutes) <= m:
            minutes.append({"lat": [], "errors": 0, "rss": None})
        return minutes[m]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def worker():
            while time.perf_counter() - t0 < duration:
                start = time.perf_counter()
                ok = await mixed(client, model, next(counter), steps)
                b = bucket(start)
                b["lat"].append(time.perf_counter() - start)
                b["errors"] += not ok

        async def memory():
            while time.perf_counter() - t0 < duration:
                await asyncio.sleep(5)
                if pid is not None:
                    bucket(time.perf_counter())["rss"] = rss_mib(pid)
        await asyncio.gather(memory(), *(worker() for _ in range(clients)))
    return minutes


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def soak_report(minutes: list[dict]) -> tuple[list[list], str, bool]:
    """The per-minute rows, a verdict sentence and whether the soak passed (no errors, resident memory at most 5%
    above the first minute's, the last minute's p99 within 1.5x of the second minute's)."""
    full = [m for m in minutes if m["lat"]]
    rows = [[i + 1, len(m["lat"]), m["errors"], f"{statistics.median(m['lat']):.2f}", f"{pct(m['lat'], 0.99):.2f}",
             "" if m["rss"] is None else f"{m['rss']:.0f}"] for i, m in enumerate(full)]
    errors = sum(m["errors"] for m in full)
    rss = [m["rss"] for m in full if m["rss"] is not None]
    growth = (max(rss[1:]) / rss[0] - 1) * 100 if len(rss) > 1 else float("nan")
    p99_ratio = pct(full[-1]["lat"], 0.99) / pct(full[1]["lat"], 0.99) if len(full) > 2 else float("nan")
    passed = errors == 0 and growth <= 5 and p99_ratio <= 1.5
    text = (f"{sum(len(m['lat']) for m in full)} requests, {errors} errors; resident memory after the first minute "
            f"grew at most {growth:.1f}% (limit 5%); last minute's p99 / second minute's: {p99_ratio:.2f} "
            f"(limit 1.5): {'passed' if passed else 'FAILED'}.")
    return rows, text, passed


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
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok),
            "tok_s": sum(r[2] for r in ok) / wall, "req_s": len(ok) / wall, "p50": statistics.median(lats),
            "p99": pct(lats, 0.99), "ttft50": statistics.median(ttfts)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="an already running server (default: start one)")
    p.add_argument("--model", default=None, help="checkpoint directory for the server this script starts")
    p.add_argument("--model-name", default=None, help="model id (default: the directory name)")
    p.add_argument("--clients", default="1,4,16,32", help="concurrency levels, comma-separated (a soak: one)")
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-tokens", default="16,48,96", help="cycled per request")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per canvas")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--server-args", default="", help="extra `dgemma serve` arguments")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="soak: mixed requests for this long, reported per minute (at least 180)")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="also save the table as bench/results/NAME.json for BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.duration is not None and (args.duration < 180 or "," in args.clients):
        p.error("--duration needs at least 180 seconds (three minutes to compare) and one --clients level")
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
        if args.duration is not None:
            return run_soak(args, argv, url, name, proc)
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


def run_soak(args, argv, url: str, name: str, proc) -> int:
    clients = int(args.clients)
    print(f"# soak {url} model={name} clients={clients} duration={args.duration:g} s steps={args.steps}", flush=True)
    minutes = asyncio.run(soak(url, name, clients, args.duration, args.steps, proc and proc.pid))
    rows, text, passed = soak_report(minutes)
    for r in rows:
        print(" | ".join(map(str, r)))
    print(text)
    if args.save:
        from ..bench.report import save_table
        save_table(args.save, f"Soak (`dgemma serve`, model {name}, {args.duration / 60:g} minutes)",
                   "python -m dgemma.serving.loadtest " + " ".join(sys.argv[1:] if argv is None else argv),
                   ["minute", "requests", "errors", "p50 latency (s)", "p99 latency (s)", "server RSS (MiB)"], rows,
                   text=f"{clients} clients send completions, chat and infill requests, streamed and not, with the "
                        f"entropy, confidence and top-k samplers, at most {args.steps} denoising steps a canvas. "
                        + text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
