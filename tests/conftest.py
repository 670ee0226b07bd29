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
