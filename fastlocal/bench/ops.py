"""Every op's :class:`~fastlocal.bench.suite.Suite`, by op name: what ``python -m fastlocal bench`` runs.

Each suite is defined in its op's module (``fastlocal/bench/<op>.py``), the one definition
``benchmarks/test_<op>.py`` also runs.
"""

from __future__ import annotations

from .encoder_sampling import EncoderSampling
from .etad import ETADSuite
from .gta import GTASuite
from .local_attention import LocalAttention
from .nms_1d import Nmw, SoftNms
from .roi_align_1d import RoiAlign
from .selective import Selective
from .suite import Suite
from .tallformer import TALLFormerSuite
from .topk_std import TopkStd
from .vidtr import VidTrSuite

SUITES: dict[str, Suite] = {s.op: s for s in (LocalAttention(), RoiAlign(), TopkStd(), Selective(), SoftNms(), Nmw())}

#: Whole-model suites, opt-in (``--ops vidtr``, ``--ops etad``, ``--ops encoder_sampling`` (ETAD's end-to-end
#: step: full backprop vs checkpointing vs encoder gradient sampling), ``--ops gta``, ``--ops tallformer``): a step
#: of a full model takes seconds, so they stay out of the default run (and of ``--quick``).
MODEL_SUITES: dict[str, Suite] = {
    s.op: s for s in (VidTrSuite(), ETADSuite(), EncoderSampling(), GTASuite(), TALLFormerSuite())
}
