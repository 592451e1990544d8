"""The architectures built on fastlocal's ops, installed as ``fastlocal.models``.

One folder per model (``tut/`` today; VidTr, GTA, ETAD and TALLFormer follow the same
convention, see docs/design.md "Models"), one training engine (:mod:`fastlocal.models.engine`)
and one command line::

    python -m fastlocal.models list
    python -m fastlocal.models tut info --preset salads50
    python -m fastlocal.models tut train --preset salads50 --data DIR --out RUN
    torchrun --nproc_per_node 2 -m fastlocal.models tut train ...

>>> model = fastlocal.models.create("tut", preset="salads50")  # doctest: +SKIP
"""

from .registry import create, get_preset, list_models
from .tut import TUT, TUTConfig, TUTTrainConfig

__all__ = ["TUT", "TUTConfig", "TUTTrainConfig", "create", "get_preset", "list_models"]
