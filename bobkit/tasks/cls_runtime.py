"""Where and how a classification run executes: device, DDP, mixed precision, determinism.

One process per GPU under torchrun (WORLD_SIZE > 1, NCCL on GPUs, gloo on CPU); a plain process
otherwise. On a CPU the run is deterministic (a killed and resumed run ends with the same metrics);
on a GPU speed wins: cuDNN autotuning, channels_last, bf16 where the card has it.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from bobkit.manifest.hparams import Hparams


@dataclass
class Runtime:
    device: torch.device
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None  # None: full precision
    channels_last: bool = False
    deterministic: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def needs_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> dict[str, Any]:
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {"device": str(self.device), "gpu_name": gpu, "world_size": self.world_size,
                "cpu_threads": torch.get_num_threads() if self.device.type == "cpu" else None,
                "amp": None if self.amp_dtype is None else str(self.amp_dtype).replace("torch.", ""),
                "channels_last": self.channels_last, "deterministic": self.deterministic}


def choose_amp(device: torch.device, amp: bool, preferred: str) -> torch.dtype | None:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; off on CPU."""
    if not amp or device.type != "cuda":
        return None
    if preferred == "bfloat16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def cpu_threads(smoke: bool) -> int | None:
    """Intra-op threads on a CPU: $BOBKIT_CPU_THREADS, else 1 for smoke runs (their 32 px tensors gain
    nothing from threads, and on a busy host spinning OpenMP threads cost several times the work),
    else torch's default (None)."""
    env = os.environ.get("BOBKIT_CPU_THREADS")
    if env:
        return max(1, int(env))
    return 1 if smoke else None


def start(hp: Hparams, smoke: bool = False) -> Runtime:
    """Set up the process: DDP if launched by torchrun, the device, AMP (hp.amp, hp.amp_dtype), seeds
    (hp.seed) and determinism."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            from bobkit.errors import EnvironmentMissing

            raise EnvironmentMissing(f"this run starts {os.environ.get('LOCAL_WORLD_SIZE', world)} processes per node "
                                     f"but only {torch.cuda.device_count()} GPU(s) are visible; give it more GPUs "
                                     "(--gpus) or lower the recipe's gpus")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    seed_everything(hp.seed + rank)
    deterministic = device.type == "cpu"
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        threads = cpu_threads(smoke)
        if threads:
            torch.set_num_threads(threads)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = choose_amp(device, hp.amp, hp.amp_dtype)
    return Runtime(device, world, rank, local_rank, amp, channels_last=device.type == "cuda",
                   deterministic=deterministic)


def stop(rt: Runtime) -> None:
    if rt.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def running(hp: Hparams, smoke: bool = False) -> Iterator[Runtime]:
    """start() for the length of a run, stop() however it ends (every runner's frame)."""
    rt = start(hp, smoke=smoke)
    try:
        yield rt
    finally:
        stop(rt)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_reduce_sum(rt: Runtime, values: list[float]) -> list[float]:
    if not rt.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def all_gather_cat(rt: Runtime, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank tensor (rows may differ in number) across ranks."""
    if not rt.distributed:
        return tensor
    n = torch.tensor([tensor.shape[0]], device=rt.device)
    sizes = [torch.zeros_like(n) for _ in range(rt.world_size)]
    torch.distributed.all_gather(sizes, n)
    biggest = int(max(s.item() for s in sizes))
    padded = torch.zeros((biggest, *tensor.shape[1:]), dtype=tensor.dtype, device=rt.device)
    padded[: tensor.shape[0]] = tensor.to(rt.device)
    out = [torch.zeros_like(padded) for _ in range(rt.world_size)]
    torch.distributed.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)]).cpu()


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        torch.distributed.barrier()


def default_workers(rt: Runtime) -> int:
    """Loader processes: none on a CPU (tiny data; workers cost more than they give), else up to 8."""
    env = os.environ.get("BOBKIT_WORKERS")
    if env is not None:
        return max(0, int(env))
    if rt.device.type != "cuda":
        return 0
    per_rank = (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", rt.world_size)))
    return max(1, min(8, per_rank - 1))
