"""Process-group helpers that are exact no-ops in a single process.

Every method calls these instead of ``torch.distributed`` directly, so the same method code
runs in one plain process, under ``torchrun`` on CPUs (gloo) or on GPUs (NCCL).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from densessl.runtime import launched_world_size


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_from_environment(timeout_s: float | None = None) -> torch.device:
    """Join the process group described by torchrun's environment, if any, and pick a device.

    NCCL is used when CUDA is available, gloo otherwise. Without ``WORLD_SIZE`` > 1 nothing is
    initialised and the process runs alone. ``timeout_s`` bounds every collective: a process that
    stops answering (hung, SIGSTOP, lost node) ends the job with an error after that long instead
    of stalling its peers for ever.
    """
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if launched_world_size() > 1 and not is_distributed():
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **kwargs)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def shutdown(agreed: bool) -> None:
    """Leave the process group, if any. ``agreed``: every process reached the same end (a finished
    or a cleanly stopped run), so they wait for each other first; a process leaving alone would
    close connections its peers still read, and gloo aborts the peer on exit."""
    if not is_distributed():
        return
    if agreed:
        dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (rank order), without gradient."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def _collective_device(device: torch.device) -> torch.device:
    """Where a tensor must be for a collective: NCCL reduces device tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else device


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on at least one (a collective: all must call)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device(torch.device("cpu")))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over processes (a copy; the input is left unchanged)."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.to(_collective_device(tensor.device), copy=True)
    dist.all_reduce(out)
    return out.div_(world_size()).to(tensor.device)


@torch.no_grad()
def shuffle_bn_forward(
    encoder: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    images: torch.Tensor,
    generator: torch.Generator,
    groups: int = 2,
) -> list[torch.Tensor]:
    """Encode ``images`` with batch-norm statistics computed over a random split of the batch.

    MoCo's shuffle-BN: the key images of all processes are gathered, permuted (the same
    permutation on every process, drawn from ``generator``, which must be seeded identically on
    all of them), each process encodes its slice with its own BN statistics, and the outputs are
    gathered and un-permuted, so no key sees the batch statistics of its own query.

    Single-process substitute: the permuted batch is cut into ``groups`` equal chunks that are
    encoded separately, which reproduces exactly what ``groups`` processes would compute for the
    same global batch and permutation. ``groups=1`` disables shuffling (the information leak
    MoCo warns about is then present).

    ``encoder`` returns a sequence of tensors whose first dimension is the batch.
    """
    local = images.shape[0]
    gathered = all_gather(images)
    total = gathered.shape[0]
    perm = torch.randperm(total, generator=generator).to(images.device)
    inverse = torch.argsort(perm)
    shuffled = gathered[perm]
    if is_distributed():
        start = rank() * local
        outputs = [list(encoder(shuffled[start : start + local]))]
    else:
        if groups < 1 or total % groups:
            raise ValueError(f"shuffle-BN needs the batch ({total}) divisible by groups ({groups})")
        outputs = [list(encoder(chunk)) for chunk in shuffled.chunk(groups)]
    merged = [torch.cat([out[i] for out in outputs]) for i in range(len(outputs[0]))]
    result = []
    for tensor in merged:
        full = all_gather(tensor)[inverse]
        result.append(full[rank() * local : (rank() + 1) * local])
    return result


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics span the batches of every process, on any device.

    ``nn.SyncBatchNorm`` runs on GPUs only (its kernels are CUDA's); this is the same computation
    in plain tensor operations and differentiable all-reduces, so a CPU run under torchrun (gloo)
    normalises exactly as one process would on the whole global batch. Mean and variance are
    taken in two passes (sum, then sum of squared deviations) in float32; the running variance
    is the unbiased global one, as in ``nn.SyncBatchNorm``. Outside training, or alone, it is
    plain batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        local_count = torch.tensor([x.numel() / x.shape[1]], device=x.device)
        sums = differentiable_all_reduce(torch.cat([x.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x - mean.view(shape)
        var = differentiable_all_reduce(centred.pow(2).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every batch norm of ``module`` with statistics over all processes: ``nn.SyncBatchNorm`` on
    CUDA, :class:`GlobalBatchNorm` elsewhere (CPU / gloo). Weights and buffers are kept."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    converted = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, device))
    return converted
