"""Share the cores among pytest-xdist workers instead of oversubscribing them.

Each worker (and each server or CLI subprocess a test starts, through OMP_NUM_THREADS) would otherwise take torch's
default of one thread per core; with 2 workers on 2 cores that is 4+ spinning OpenMP threads, which made single
requests on the tiny model take minutes on CI and time out."""
import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _workers))
    os.environ["OMP_NUM_THREADS"] = _threads
    os.environ["MKL_NUM_THREADS"] = _threads
    import torch

    torch.set_num_threads(int(_threads))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def text_ckpt(tmp_path_factory):
    """A random tiny model over the bundled code tokenizer's vocabulary (canvas 16, context 96), with that
    tokenizer: what the text commands need, in a second."""
    import shutil
    from pathlib import Path

    import torch

    from dgemma import DiffusionGemma
    from dgemma.config import get_preset
    from dgemma.tokenizer import Tokenizer
    bundled = Path(__file__).resolve().parent.parent / "dgemma" / "assets" / "code"
    tok = Tokenizer.from_dir(bundled)
    cfg = get_preset("tiny").replace(vocab_size=tok.vocab_size, canvas_length=16, max_position_embeddings=96)
    m = DiffusionGemma(cfg)
    m.init_weights(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("text-model")
    m.save_pretrained(path)
    shutil.copy(bundled / "tokenizer.json", path / "tokenizer.json")
    return path
