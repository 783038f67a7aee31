"""The machine a run ran on, probed in one place for bench reports, benchmark scripts and fine-tuning records."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def describe_hardware() -> dict[str, Any]:
    """Machine facts: platform, python, cpu (its model name), cpu_count, memory_gib, torch and, with CUDA, gpu and gpu_count."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    info.setdefault("cpu", platform.processor() or platform.machine())
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    except ImportError:
        pass
    return info
