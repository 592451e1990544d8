"""``fastlocal.nn``: drop-in ``nn.Module``s built on the fastlocal ops (docs/design.md, "Ops")."""

from .local_attention import LocalAttention
from .relative_position_bias import RelativePositionBias

__all__ = ["LocalAttention", "RelativePositionBias"]
