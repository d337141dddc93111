"""What the machine contributes to a float result, for the lineage record.

The same code and data give bit-identical outputs only on the same kind of CPU kernels: torch
picks its vectorised kernels by ``torch.backends.cpu.get_cpu_capability()`` (AVX2, AVX-512...),
oneDNN and the BLAS pick theirs by the CPU too, and the thread count changes the order of
floating-point sums. So a record names the CPU model, the capability torch used, the oneDNN and
BLAS libraries (with their versions and threads), and the CUDA device, driver and cuDNN when
a GPU was used. torch is described only when the job imported it (a torch-free job is not
slowed down by importing it just to describe it).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector instruction sets the CPU offers (a subset of ``/proc/cpuinfo`` flags)."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in present]
    except OSError:
        pass
    return []


def blas_libraries() -> list[dict[str, Any]]:
    """BLAS/OpenMP libraries loaded in this process, with version, threads and kernel family
    (threadpoolctl, which scikit-learn depends on)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer")
    return [{k: info.get(k) for k in keys if info.get(k) is not None} for info in threadpool_info()]


def _version_in(config: str, pattern: str) -> str | None:
    """A version out of ``torch.__config__.show()`` (e.g. "Intel(R) MKL-DNN v3.12.0")."""
    match = re.search(pattern, config)
    return match.group(1) if match else None


def torch_description() -> dict[str, Any] | None:
    """Kernels and threads torch used, or None when the job never imported torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    out: dict[str, Any] = {
        "version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": _version_in(config, r"(?:oneDNN|MKL-DNN|MKLDNN) v?([0-9][^\s(]*)"),
        "blas": blas.group(1) if blas else None,
        "mkl": _version_in(config, r"Math Kernel Library Version ([0-9][^\s-]*)"),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = cuda_description(torch)
    return out


def cuda_description(torch: Any) -> dict[str, Any]:
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "device": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": _nvidia_driver(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def describe(threads: int | None = None) -> dict[str, Any]:
    """The machine record: CPU, kernels, libraries, threads (and CUDA when used)."""
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "job_threads": threads,
        "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "torch": torch_description(),
        "blas_libraries": blas_libraries(),
    }
