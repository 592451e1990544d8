"""A short end-to-end run of every op: each available backend against the reference.

Forward and backward at small sizes on CPU (and CUDA when present), reporting the
largest deviation from the reference and the median wall time of a few runs (a
sanity check, not a benchmark). Exits non-zero on a mismatch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._dispatch import BACKENDS, available_backends, triton_interpreted
from .local_attention import IMPLEMENTED as LOCAL_ATTENTION_BACKENDS
from .local_attention import local_attention
from .nms_1d import IMPLEMENTED as NMS_BACKENDS
from .nms_1d import nms_1d
from .roi_align_1d import IMPLEMENTED as ROI_ALIGN_BACKENDS
from .roi_align_1d import roi_align_1d
from .topk_std import IMPLEMENTED as TOPK_STD_BACKENDS
from .topk_std import topk_std_attention


@dataclass
class Case:
    op: str
    implemented: tuple[str, ...]
    run: Callable[[str, torch.device], list[torch.Tensor]]  # outputs and input gradients
    tolerance: float = 1e-4


def _leaf(*shape: int, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, device=device, requires_grad=True)


def _with_grads(outputs: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(outputs, inputs, torch.ones_like(outputs))
    return [outputs.detach(), *grads]


def _local_attention(backend: str, device: torch.device) -> list[torch.Tensor]:
    q, k, v = (_leaf(2, 4, 257, 32, device=device) for _ in range(3))
    rpb = _leaf(4, 31, device=device)
    out = local_attention(q, k, v, 31, rpb, backend=backend)
    return _with_grads(out, [q, k, v, rpb])


def _topk_std(backend: str, device: torch.device) -> list[torch.Tensor]:
    q, k, v = (_leaf(64, 4, 17, 32, device=device) for _ in range(3))
    out, _ = topk_std_attention(q, k, v, 8, backend=backend)
    return _with_grads(out, [q, k, v])


def _roi_align(backend: str, device: torch.device) -> list[torch.Tensor]:
    x = _leaf(2, 64, 100, device=device)
    g = torch.Generator().manual_seed(1)
    start = torch.rand(500, generator=g) * 90
    rois = torch.stack([torch.randint(0, 2, (500,), generator=g).float(), start,
                        start + torch.rand(500, generator=g) * 30], 1).to(device)
    out = roi_align_1d(x, rois, 16, backend=backend)
    return _with_grads(out, [x])


def _nms(backend: str, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    start = torch.rand(2000, generator=g) * 1000
    segments = torch.stack([start, start + torch.rand(2000, generator=g) * 50], 1).to(device)
    scores = torch.rand(2000, generator=g).to(device)
    return [nms_1d(segments, scores, 0.5, backend=backend).float()]


CASES = [
    Case("local_attention", LOCAL_ATTENTION_BACKENDS, _local_attention),
    Case("topk_std_attention", TOPK_STD_BACKENDS, _topk_std),
    Case("roi_align_1d", ROI_ALIGN_BACKENDS, _roi_align),
    Case("nms_1d", NMS_BACKENDS, _nms, tolerance=0.0),
]


def _timed(case: Case, backend: str, device: torch.device, seed: int, repeats: int = 5
           ) -> tuple[list[torch.Tensor], float]:
    """Outputs of one seeded run, and the median wall time of ``repeats`` runs after a warm-up."""
    times = []
    for _ in range(repeats + 1):
        torch.manual_seed(seed)
        start = time.perf_counter()
        outputs = case.run(backend, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return outputs, statistics.median(times[1:])


def run_smoke(seed: int = 0) -> int:
    status = available_backends()
    print("backends: " + "; ".join(f"{k}: {v}" for k, v in status.items()))
    if status["cpu"] != "available":
        # setup.py always builds fastlocal._C: without it the install is broken, and a run of
        # the reference alone would look like a pass.
        print(f"smoke: FAILED, the C++ extension is missing ({status['cpu']})")
        return 1
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{'op':20s} {'device':6s} {'backend':10s} {'fwd+bwd ms (median)':>20s} {'max |diff| vs reference':>24s}")
    failures = 0
    for device in devices:
        for case in CASES:
            expected, ms = _timed(case, "reference", device, seed)
            print(f"{case.op:20s} {device.type:6s} {'reference':10s} {ms:20.2f} {'-':>24s}")
            for backend in BACKENDS[:-1]:
                if backend not in case.implemented or status[backend] != "available":
                    continue
                if backend == "cpu" and device.type != "cpu":
                    continue
                if backend == "triton" and device.type == "cpu" and triton_interpreted():
                    # Interpreted Triton at these sizes takes minutes; the test suite checks it
                    # at small sizes. Said, not silently dropped.
                    print(f"{case.op:20s} {device.type:6s} {backend:10s} {'skipped: TRITON_INTERPRET=1':>45s}")
                    continue
                got, ms = _timed(case, backend, device, seed)
                diff = max((a.float() - b.float()).abs().max().item() if a.numel() else 0.0
                           for a, b in zip(got, expected, strict=True))
                ok = all(a.shape == b.shape for a, b in zip(got, expected, strict=True)) and diff <= case.tolerance
                failures += not ok
                print(f"{case.op:20s} {device.type:6s} {backend:10s} {ms:20.2f} {diff:24.2e}"
                      f"{'' if ok else '  MISMATCH'}")
    print("smoke: " + ("all backends match the reference" if not failures else f"{failures} mismatches"))
    return 1 if failures else 0
