"""`dgemma serve`: an OpenAI-compatible HTTP server with continuous batching, infill and live drafts.

The app lives in dgemma.serving.app, the step-level batching engine in dgemma.serving.batcher; both import
FastAPI/torch lazily so `dgemma --help` stays fast. Install the server's extras with `pip install dgemma[serve]`.
"""

from __future__ import annotations

from pathlib import Path


def default_model_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "code"


def run(args) -> int:
    try:
        import uvicorn

        from .app import ServerState, create_app
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"dgemma serve needs {e.name}: pip install 'dgemma[serve]'") from None
    from ..hub import is_hub_id, locate
    model = str(locate(args.model or default_model_dir(), args.revision))
    name = args.model_name or (args.model.partition("@")[0] if args.model and is_hub_id(args.model) else None)
    path = Path(model)
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json (the bundled model may not be installed; pass --model DIR)")
    if args.max_batch < 1 or args.max_queue < 0:
        raise ValueError("--max-batch must be >= 1 and --max-queue >= 0")
    state = ServerState(model, model_name=name, max_batch=args.max_batch, max_queue=args.max_queue,
                        context_length=args.context_length, lock_after=args.lock_after, api_key=args.api_key,
                        dtype=args.dtype, startup_delay=args.startup_delay, device=args.device, compile=args.compile)
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=2)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching, infill, live drafts)",
                       description="Serve a checkpoint over an OpenAI-compatible API: /v1/models, /v1/completions "
                       "(suffix = infill), /v1/chat/completions, SSE streaming, llama.cpp-style /infill, /tokenize, "
                       "/detokenize, /health and Prometheus /metrics. Requests join the running batch at the next "
                       "denoising step.")
    p.add_argument("--model", default=None, help="checkpoint directory, preset name or Hugging Face Hub id "
                   "(org/name[@revision], through the hub's cache) (default: the bundled code model, dgemma/assets/code)")
    p.add_argument("--revision", default=None, help="hub revision of --model: a branch, tag or commit (default: main)")
    p.add_argument("--model-name", default=None,
                   help="model id clients must send (default: the hub id, else the directory name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--max-batch", type=int, default=8, help="rows denoised together (batch slots)")
    p.add_argument("--max-queue", type=int, default=64, help="requests allowed to wait for a slot; beyond: 503")
    p.add_argument("--context-length", type=int, default=None,
                   help="prompt + max_tokens limit (default: min(max_position_embeddings, 8192))")
    p.add_argument("--lock-after", type=int, default=2,
                   help="stream a canvas's leading tokens once their argmax is unchanged for this many steps (they "
                   "are then clamped, so never contradicted); 0: text only per committed canvas, outputs equal "
                   "model.generate")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default float32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--compile", action="store_true", help="run the engine's compiled step (torch.compile; the first "
                   "requests of each batch size pay for compiling)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level: debug, info, warning, error (default warning)")
    p.add_argument("--startup-delay", type=float, default=0.0, help=argparse_suppress())
    p.set_defaults(func=run)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS
