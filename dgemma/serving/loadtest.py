"""Load test / benchmark for `dgemma serve`: throughput and p50/p99 latency at several concurrency levels.

    python -m dgemma.serving.loadtest --model /path/to/ckpt           # starts a server on a loopback port
    python -m dgemma.serving.loadtest --url http://127.0.0.1:8000 --model-name code

Each client sends `--requests` completions one after another (mixed max_tokens, every other one streamed).
Prints a markdown table: clients, requests, errors, tokens/s, requests/s, p50/p99 latency, p50 TTFT.

    python -m dgemma.serving.loadtest --model dgemma/assets/code --duration 600 --clients 8   # soak

    python -m dgemma.serving.loadtest --model dgemma/assets/code --clients 64 --requests 8 --verify  # mix-ups

`--duration` is a soak instead: the clients send mixed requests (completions, chat, infill, streamed and not,
four samplers) for that long; per minute it reports requests, errors, p50/p99 latency and the server's resident
memory, and at the end whether memory grew at most 5% after the first minute and the last minute's p99 stayed
within 1.5x of the second's. `--verify` sends such requests from every client at once, then each alone, and
checks that every text is the same and the server finished each exactly twice.
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


MIXED_SAMPLERS = ("entropy", "confidence", "topk", "margin")


def _text(path: str, obj: dict, streamed: bool) -> str:
    """The generated text of a response body or of one streamed event."""
    if path == "/infill":
        return obj.get("content", "")
    if not obj.get("choices"):
        return ""
    choice = obj["choices"][0]
    if path == "/v1/completions":
        return choice.get("text") or ""
    return (choice.get("delta") if streamed else choice.get("message") or {}).get("content") or ""


async def mixed(client: httpx.AsyncClient, model: str, i: int, steps: int) -> tuple[bool, str]:
    """One request of the mix, by `i`: completion, chat or infill, streamed or not, a sampler, a length and the
    seed i. (Whether it succeeded: a 200, and a streamed one ended with [DONE] and no error event; its text.)"""
    kind, stream = ("completion", "chat", "infill")[i % 3], (i // 3) % 2 == 1
    extra = {"seed": i, "denoising_steps": steps, "sampler": MIXED_SAMPLERS[(i // 6) % 4], "stream": stream}
    if kind == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": f"task {i % 11}"}],
                                              "max_tokens": (16, 48)[i % 2]}
    elif kind == "infill":
        path, body = "/infill", {"input_prefix": f"def f_{i % 11}(x):\n", "input_suffix": "\n\nprint(f(1))\n",
                                 "n_predict": 12, "seed": i, "stream": stream}
    else:
        path, body = "/v1/completions", {"prompt": f"def function_{i % 11}(x):\n    ",
                                         "max_tokens": (16, 48, 96)[i % 3]}
    if path != "/infill":
        body = {"model": model, **body, **extra}
    try:
        if not stream:
            r = await client.post(path, json=body)
            return r.status_code == 200, _text(path, r.json(), False) if r.status_code == 200 else ""
        async with client.stream("POST", path, json=body) as r:
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        ok = r.status_code == 200 and bool(lines) and not any('"error"' in line[:12] for line in lines) and (
            path == "/infill" or lines[-1] == "data: [DONE]")
        return ok, "".join(_text(path, json.loads(line[6:]), True) for line in lines if line != "data: [DONE]")
    except (httpx.HTTPError, ValueError):
        return False, ""


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
                ok, _ = await mixed(client, model, next(counter), steps)
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


def finished(url: str) -> float:
    return next(float(line.split()[1]) for line in httpx.get(f"{url}/metrics").text.splitlines()
                if line.startswith("dgemma_requests_finished_total "))


async def verify(url: str, model: str, clients: int, per_client: int, steps: int, headers=None) -> dict:
    """The mix-up check: `clients` clients send `per_client` mixed requests each, at once; then every request is
    sent again alone. Returns the failed ones, the ones whose text differs from alone, and the server's count of
    finished requests (lost or duplicated ones would make it differ from twice the number sent)."""
    n, before = clients * per_client, finished(url)
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as client:
        async def worker(c):
            return [(i, await mixed(client, model, i, steps)) for i in range(c * per_client, (c + 1) * per_client)]
        together = dict(item for items in await asyncio.gather(*(worker(c) for c in range(clients))) for item in items)
        alone = {i: await mixed(client, model, i, steps) for i in range(n)}
    return {"requests": n, "failed": sorted(i for i in range(n) if not (together[i][0] and alone[i][0])),
            "differ": sorted(i for i in range(n) if together[i][1] != alone[i][1]),
            "finished": finished(url) - before}


def command(argv) -> str:
    """The command line a saved table came from."""
    return "python -m dgemma.serving.loadtest " + " ".join(sys.argv[1:] if argv is None else argv)


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
    p.add_argument("--verify", action="store_true",
                   help="mix-up check: one --clients level sends mixed requests at once, then each is sent alone; "
                        "every text must match (exit 1 if not)")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="also save the table as bench/results/NAME.json for BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.duration is not None and (args.duration < 180 or "," in args.clients):
        p.error("--duration needs at least 180 seconds (three minutes to compare) and one --clients level")
    if args.verify and (args.duration is not None or "," in args.clients):
        p.error("--verify takes one --clients level and no --duration")
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
        if args.verify:
            return run_verify(args, argv, url, name)
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
                       command(argv),
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


def run_verify(args, argv, url: str, name: str) -> int:
    clients = int(args.clients)
    t0 = time.perf_counter()
    r = asyncio.run(verify(url, name, clients, args.requests, args.steps))
    ok = not r["failed"] and not r["differ"] and r["finished"] == 2 * r["requests"]
    text = (f"{clients} clients x {args.requests} requests ({r['requests']}: completions, chat and infill, streamed "
            f"and not, seeds 0-{r['requests'] - 1}, samplers {', '.join(MIXED_SAMPLERS)}), then each alone: "
            f"{len(r['failed'])} failed, {len(r['differ'])} differ from alone, the server finished "
            f"{r['finished']:.0f} of {2 * r['requests']}, in {time.perf_counter() - t0:.0f} s: "
            f"{'passed' if ok else 'FAILED'}.")
    print(text)
    if r["failed"] or r["differ"]:
        print(f"failed: {r['failed'][:20]} differ: {r['differ'][:20]}")
    if args.save:
        from ..bench.report import save_table
        save_table(args.save, f"No mix-ups under load (`dgemma serve`, model {name})",
                   command(argv),
                   ["clients", "requests", "failed", "differ from alone", "finished / sent"],
                   [[clients, r["requests"], len(r["failed"]), len(r["differ"]),
                     f"{r['finished']:.0f} / {2 * r['requests']}"]], text=text)
    return 0 if ok else 1


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
                   command(argv),
                   ["minute", "requests", "errors", "p50 latency (s)", "p99 latency (s)", "server RSS (MiB)"], rows,
                   text=f"{clients} clients send completions, chat and infill requests, streamed and not, with the "
                        f"{', '.join(MIXED_SAMPLERS)} samplers, at most {args.steps} denoising steps a canvas. "
                        + text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
