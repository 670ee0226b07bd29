"""Data-parallel training with torch.distributed: DDP, or FSDP2 (`fully_shard`) for models too big for one device.

Launched by `torchrun --nproc-per-node N -m dgemma.training.cli ...`; without torchrun's environment everything
here is a no-op for one process. Every rank draws the same global batch and the same noise (one seed), then
trains on its own rows with the loss normalised by the global token counts; the gradient average over ranks is
undone by scaling the local loss by the world size, so N ranks compute what one process computes on the
global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .objective import diffusion_loss


class LossModule(nn.Module):
    """The objective as a module call, so DDP and FSDP2 see a forward: DDP prepares its gradient reduction
    there, FSDP2 gathers the root's parameters (embeddings, tied head, final norm) there."""

    def __init__(self, model: nn.Module, same_passes: bool = False):
        super().__init__()
        self.model = model
        self.same_passes = same_passes

    def forward(self, ids, prompt_len, **kwargs):
        return diffusion_loss(self.model, ids, prompt_len, same_passes=self.same_passes, **kwargs)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    mode: str = "none"  # none (one process) | ddp | fsdp
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of n = world * per-rank rows."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            x = x.detach().clone()
            dist.all_reduce(x)
        return x

    def close(self):
        if self.world > 1:  # together: a rank that tore its group down while another still worked (rank 0 plots
            dist.barrier()  # the losses last) sometimes aborted at exit
            dist.destroy_process_group()


def setup(mode: str, device: str | None = None) -> Dist:
    """Resolve the device (--device, else CUDA when available) and join the process group torchrun describes:
    nccl on CUDA, each process on the GPU of its local rank; gloo on the CPU. One process: no group."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), mode, dev)


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """The module the training step calls: LossModule(model), under DDP or FSDP2 when running distributed."""
    loss = LossModule(model, same_passes=d.mode == "fsdp")
    if d.world == 1:
        return loss
    if d.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        # find_unused_parameters: a rank whose rows all skip self-conditioning gives its block no gradient
        return DistributedDataParallel(loss, find_unused_parameters=True)
    from torch.distributed.fsdp import fully_shard
    for layer in model.layers:
        fully_shard(layer)
    fully_shard(loss)
    return loss


def full_state_dict(model: nn.Module, d: Dist) -> dict | None:
    """Unsharded CPU weights (every rank must call; rank 0 gets them, others None)."""
    if d.mode != "fsdp":
        return model.state_dict() if d.main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if d.main else None


def optimizer_state(model: nn.Module, opt, d: Dist) -> dict | None:
    if d.mode != "fsdp":
        return opt.state_dict() if d.main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    sd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if d.main else None


def load_optimizer_state(model: nn.Module, opt, state: dict, d: Dist):
    if d.mode != "fsdp":
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
