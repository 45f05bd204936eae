"""The machine: the device, the training precision, whether this CPU computes bfloat16 in hardware, several processes
and the signals that stop them.

Mixed precision pays only where the hardware has it (Micikevicius et al., "Mixed Precision Training", ICLR
2018; bfloat16: Kalamkar et al., "A Study of BFLOAT16 for Deep Learning Training", 2019). CUDA GPUs of the
Ampere generation and later, and x86 CPUs with AMX or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4
and later), multiply bfloat16 in hardware: there bf16 convolutions run several times faster than float32. On
AVX2-only CPUs PyTorch *emulates* bfloat16, 6-25x slower than float32. So ``precision="auto"``
(`resolve_precision`) and the inference backends' ``auto`` (`stlib.backends`) ask `cpu_has_fast_bf16`.

Every branch that depends on that answer must be testable on any CPU: the environment variable
``STLIB_FAST_BF16`` forces it (``1``: behave as a CPU with native bf16, ``0``: as one without; unset: detect).
Forced to ``1`` on an AVX2 CPU, the bf16 paths still compute correctly, only slowly, which is what the test
suite needs (``make test STLIB_FAST_BF16=1`` runs the whole suite as a bf16 CPU would).

Memory (`keep_freed_memory`): a frame of the style network allocates and frees tens of large tensors. glibc's
malloc gives blocks of this size back to the kernel when they are freed and asks again for the next frame, and
each new page then costs a page fault and a zeroing: about 24,000 faults (94 MB) per 640 x 480 frame of even the
slim network, a third of its time. Keeping freed memory in the process (no mmap for large blocks, a large trim
threshold: what Intel's PyTorch tuning guide gets from jemalloc/tcmalloc or ``MALLOC_*`` variables) removes them;
the inference engines, `train`, `distill` and Gatys' `optimize_image` turn it on for CPU work
(``STLIB_KEEP_MEMORY=0`` leaves malloc alone).

Several processes (``torchrun --nproc_per_node=N``; Li et al., "PyTorch Distributed: Experiences on Accelerating
Data Parallel Training", VLDB 2020): `init_distributed` joins the process group that torchrun's environment
describes (NCCL on GPUs, Gloo on CPUs) and `resolve_device` gives each process its own GPU (``LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist

__all__ = [
    "FAST_BF16_ENV",
    "KEEP_MEMORY_ENV",
    "PRECISIONS",
    "autocast",
    "cpu_has_fast_bf16",
    "default_device",
    "describe_machine",
    "detect_fast_bf16",
    "init_distributed",
    "keep_freed_memory",
    "resolve_device",
    "resolve_precision",
    "stop_on_signal",
    "usable_device",
]

KEEP_MEMORY_ENV = "STLIB_KEEP_MEMORY"
"""Environment variable: "0" leaves glibc's malloc settings alone (`keep_freed_memory` does nothing)."""

FAST_BF16_ENV = "STLIB_FAST_BF16"
"""Environment variable that forces `cpu_has_fast_bf16`: "1" (yes), "0" (no), unset or empty (detect)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Training and loss precisions: "auto" resolves to one of the others (`resolve_precision`)."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@functools.cache
def detect_fast_bf16() -> bool:
    """Whether this CPU really has bfloat16 arithmetic (AMX or AVX512-BF16), ignoring `FAST_BF16_ENV`."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = ""
    if "AMX" in capability.upper():
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no /proc/cpuinfo
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware; ``STLIB_FAST_BF16=1``/``0`` forces the answer."""
    forced = os.environ.get(FAST_BF16_ENV, "").strip().lower()
    if forced in _YES:
        return True
    if forced in _NO:
        return False
    if forced:
        raise ValueError(f"{FAST_BF16_ENV} must be 1 or 0 (or unset to detect the CPU), got {forced!r}.")
    return detect_fast_bf16()


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # mallopt's parameters (malloc.h)
_MALLOC_SETTINGS = (
    (_M_MMAP_MAX, 0),  # every block comes from the heap, none from mmap (a 256² batch of 4 has 34-67 MB activations)
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # free memory at the heap's top goes back to the kernel only beyond 2 GiB
    (_M_TOP_PAD, 256 << 20),  # grow the heap 256 MiB at a time (untouched pages cost nothing)
)


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed tensor memory in the process (glibc malloc); True if the settings took, False where not glibc."""
    if os.environ.get(KEEP_MEMORY_ENV, "").strip().lower() in _NO or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    results = [mallopt(parameter, value) for parameter, value in _MALLOC_SETTINGS]  # 1: taken
    return all(result == 1 for result in results)


def default_device() -> str:
    """ "cuda" when a CUDA GPU is available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_device(name: str | None = None) -> str:
    """`name`, or `default_device` when None, after checking that torch can use it here (ValueError otherwise)."""
    device = name or default_device()
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"Cannot use the device {device!r}: {str(err).strip().splitlines()[0]}") from None
    return device


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """The device for a name: "auto" (or None) is `default_device`; a bare "cuda" is this process's GPU."""
    if name in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"The device {name!r} was asked for but no CUDA GPU is available.")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device_type: str) -> tuple[int, int, bool]:
    """(rank, world size, whether this call created the process group) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method="env://")
    return dist.get_rank(), dist.get_world_size(), True


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision actually used, "fp32", "bf16" or "fp16", for a requested one on `device`."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        if device.type == "cpu" and cpu_has_fast_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA GPU (it trains with a GradScaler); use 'fp32' or 'bf16'.")
    return precision


def autocast(device: torch.device | str, precision: str) -> AbstractContextManager:
    """Autocast to a resolved precision ("fp32": no autocast) on `device`'s type."""
    if precision == "fp32":
        return nullcontext()
    if precision not in _DTYPES:
        raise ValueError(f"autocast needs a resolved precision (fp32, bf16 or fp16), got {precision!r}.")
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def describe_machine() -> str:
    """One line for benchmark tables: the CPU model, its bf16 answer, threads, GPU if any, torch version."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = "unknown"
    forced = " (forced by STLIB_FAST_BF16)" if os.environ.get(FAST_BF16_ENV, "").strip() else ""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    bf16 = "yes" if cpu_has_fast_bf16() else "no"
    threads = torch.get_num_threads()
    return (
        f"{model}, {os.cpu_count()} cores, {capability}, hardware bf16: {bf16}{forced}, {threads} threads{gpu}, "
        f"torch {torch.__version__}"
    )


@contextlib.contextmanager
def stop_on_signal() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks a single-process training run to stop after the current step, with a checkpoint.

    Yields a function telling whether a stop was asked for (``train(config, callback=lambda step, losses:
    stop_requested())``); a second signal stops at once (KeyboardInterrupt).
    Under torchrun (several processes) the signals keep their default meaning: ranks stopping at different
    steps would wait on each other forever.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked: list[str] = []

    def handler(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)
        print(f"\n{asked[0]}: stopping after this step with a checkpoint (again to stop at once)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)
