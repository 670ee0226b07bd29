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
    Draining = _draining_server()
    model = str(locate(args.model or default_model_dir(), args.revision))
    name = args.model_name or (args.model.partition("@")[0] if args.model and is_hub_id(args.model) else None)
    path = Path(model)
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json (the bundled model may not be installed; pass --model DIR)")
    if args.max_batch < 1 or args.max_queue < 0 or args.prefix_cache < 0:
        raise ValueError("--max-batch must be >= 1, --max-queue and --prefix-cache >= 0")
    if args.image_dir is not None and not Path(args.image_dir).is_dir():
        raise ValueError(f"--image-dir {args.image_dir}: not a directory")
    if args.request_timeout is not None and args.request_timeout <= 0 or args.drain_timeout < 0:
        raise ValueError("--request-timeout must be > 0 and --drain-timeout >= 0")
    state = ServerState(model, model_name=name, max_batch=args.max_batch, max_queue=args.max_queue,
                        context_length=args.context_length, lock_after=args.lock_after, api_key=args.api_key,
                        prefix_cache=args.prefix_cache,
                        dtype=args.dtype, startup_delay=args.startup_delay, device=args.device, compile=args.compile,
                        quantize=args.quantize, group_size=args.group_size, image_dir=args.image_dir,
                        request_timeout=args.request_timeout, exit_on_load_error=args.exit_on_load_error)
    config = uvicorn.Config(create_app(state), host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=2)
    Draining(config, state, args.drain_timeout).run()
    return 0


def _draining_server():
    """The uvicorn server class with dgemma's shutdown, built on use so that importing dgemma.serving stays light."""
    import threading
    import time

    import uvicorn

    class Draining(uvicorn.Server):
        """SIGTERM/SIGINT: stop admitting (503 with Retry-After, /health says draining), let running requests
        finish for up to `drain_timeout` seconds, end the rest with a final error event, then exit 0. A second
        signal exits at once."""

        def __init__(self, config, state, drain_timeout: float):
            super().__init__(config)
            self.state, self.drain_timeout = state, drain_timeout

        def handle_exit(self, sig, frame):
            if self.state.draining:
                self.should_exit = self.force_exit = True
                return
            self.state.draining = True
            threading.Thread(target=self._drain, name="dgemma-drain", daemon=True).start()

        def _drain(self):
            deadline = time.monotonic() + self.drain_timeout
            while time.monotonic() < deadline and self.state.active:
                time.sleep(0.05)
            if self.state.active:
                self.state.cancel_all(f"the server shut down before this request finished (drain timeout "
                                      f"{self.drain_timeout:g} s)")
                time.sleep(0.5)  # the final error events go out before the connections close
            self.should_exit = True
    return Draining


def register(sub) -> None:
    from ..quantize import add_quantize_args
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
    p.add_argument("--prefix-cache", type=int, default=4, metavar="N",
                   help="keep the caches of the last N finished requests, so that a prompt extending one (a chat's "
                        "next turn) encodes only its new tokens; each costs one batch row of KV cache (0: off)")
    p.add_argument("--lock-after", type=int, default=2,
                   help="stream a canvas's leading tokens once their argmax is unchanged for this many steps (they "
                   "are then clamped, so never contradicted); 0: text only per committed canvas, outputs equal "
                   "model.generate")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default float32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    add_quantize_args(p)
    p.add_argument("--compile", action="store_true", help="run the engine's compiled step (torch.compile; the first "
                   "requests of each batch size pay for compiling)")
    p.add_argument("--image-dir", default=None, metavar="DIR",
                   help="let image_url parts name local files inside DIR (default: only data: URLs; remote URLs are "
                   "never fetched)")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="seconds a request may take from submission; past it the request ends with a 408 and its row "
                   "is freed (a request's own `timeout` field overrides it) (default: no limit)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds running requests get to finish before they are cancelled (default 30)")
    p.add_argument("--exit-on-load-error", action="store_true",
                   help="exit with status 3 when the model fails to load (default: keep serving /health with the "
                   "error, 503 elsewhere)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level: debug, info, warning, error (default warning)")
    p.add_argument("--startup-delay", type=float, default=0.0, help=argparse_suppress())
    p.set_defaults(func=run)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS
