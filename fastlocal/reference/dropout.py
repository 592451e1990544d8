"""Counter-based dropout masks shared by every backend.

A dropout mask drawn from a stateful generator cannot be reproduced by another
backend, nor replayed in a backward that recomputes the probabilities. Instead,
whether attention probability (b*H + h, i, j) is kept is a pure function of a
per-call 32-bit seed and the three indices, built from Wellons' "lowbias32"
integer hash (a bijection on 32-bit words). The C++, CUDA and Triton kernels
implement the same function with native uint32 arithmetic, so every backend
drops exactly the same entries and the reference can check them bit for bit.

Here uint32 arithmetic is emulated in int64: a 32x32-bit product is split in
16-bit halves so that no intermediate overflows int64.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_C1, _C2 = 0x7FEB352D, 0x846CA68B


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    low = x * (c & 0xFFFF)
    high = ((x * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


def keep_threshold(p: float) -> int:
    """Entries whose hash is >= this value are kept: P(drop) = threshold / 2**32 ~= p."""
    return min(int(p * 2.0**32), 2**32 - 1)


def keep_mask(seed: int, bh: torch.Tensor, i: torch.Tensor, j: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean mask (broadcast of ``bh``, ``i``, ``j``): True where the probability is kept.

    ``hash(hash(hash(seed ^ hash(bh)) ^ i) ^ j) >= keep_threshold(p)``, all words uint32.
    """
    h = hash32(hash32(bh.long() & _MASK32) ^ (seed & _MASK32))
    h = hash32(h ^ (i.long() & _MASK32))
    h = hash32(h ^ (j.long() & _MASK32))
    return h >= keep_threshold(p)
