"""Peak memory of one generate() pass.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only; the caching
allocator's reserve is not counted). CPU (Linux): the process's peak resident set (VmHWM), reset before
the pass by writing 5 to /proc/self/clear_refs, so the figure is the pass's own peak; it includes
everything resident (weights, allocator slack), and the increase over the resident set before the pass
is the pass's working memory. Elsewhere the CPU figures are None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class MemoryReading:
    peak_bytes: int | None  # peak during the pass, absolute (includes weights)
    increase_bytes: int | None  # peak minus what was in use when the pass started


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device = device
        self._before = 0
        self.available = device.type == "cuda" or self._cpu_supported()

    @property
    def description(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (tensors on the GPU, peak of the pass)"
        if self.available:
            return "peak resident set of the process (VmHWM, reset via /proc/self/clear_refs before each pass)"
        return "not measured (needs Linux /proc for CPU runs)"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif self.available:
            self._before = _status_kb("VmRSS") * 1024
            PROC_CLEAR_REFS.write_text("5")

    def stop(self) -> MemoryReading:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.available:
            peak = _status_kb("VmHWM") * 1024
        else:
            return MemoryReading(None, None)
        return MemoryReading(peak, max(0, peak - self._before))

    @staticmethod
    def _cpu_supported() -> bool:
        try:
            PROC_CLEAR_REFS.write_text("5")
            _status_kb("VmHWM")
        except (OSError, ValueError):
            return False
        return True


def _status_kb(field: str) -> int:
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"{field} missing from {PROC_STATUS}")
