"""Multiply-adds of one VidTr view, counted by ``torch.utils.flop_counter.FlopCounterMode``.

Every matmul of the released architecture counts: patch embedding, q/k/v and output
projections, both attentions (the topK-std pooling with its registered formula: the full
``T x T`` scores and the kept rows times the values, as the released ``bmm``\\ s), MLPs and
classifier; LayerNorm, softmax and the std ranking do not. VidTr-S measures 158.25 G per
224² view, C-VidTr-S 64.60 G, C-VidTr-M 77.19 G; the paper's GFLOPs are much lower
(:data:`~fastlocal.models.vidtr.config.PAPER_GFLOPS` says why).
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import fastlocal
import fastlocal.flop_formulas  # formulas of topk_std_attention and of attention on the CPU

from .config import VidTrConfig
from .model import VidTr

__all__ = ["macs_per_view"]


def macs_per_view(config: VidTrConfig, height: int | None = None, width: int | None = None) -> int:
    """Multiply-adds (FLOPs / 2) of one forward pass on one ``[1, 3, frames, height, width]`` view
    (default ``image_size`` squared).

    Nothing is computed: the model and the view are fake tensors. The pooling layers are counted
    through the fused ``topk_std_attention`` op (the ``cpu`` backend's, whose kernel is never
    called); the reference backend would also count the kept rows' recomputed scores.
    """
    height = config.image_size if height is None else height
    width = config.image_size if width is None else width
    with FakeTensorMode(), fastlocal.use_backend("cpu"):
        model = VidTr(config).eval()
        view = torch.empty(1, 3, config.frames, height, width)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(view)
    return counter.get_total_flops() // 2
