"""``fastlocal.nn``: drop-in ``nn.Module``s built on the fastlocal ops (docs/design.md, "Ops")."""

from .global_temporal_attention import GlobalTemporalAttention
from .local_attention import LocalAttention
from .relative_position_bias import RelativePositionBias

__all__ = ["GlobalTemporalAttention", "LocalAttention", "RelativePositionBias"]
