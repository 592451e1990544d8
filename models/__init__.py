"""The five architectures built on fastlocal's ops, installed as ``fastlocal.models``.

TUT, TALLFormer, GTA, VidTr / CVidTr and ETAD land here, one module each, with their
config dataclasses and losses.
"""

from .tut import TUT, TUTConfig

__all__ = ["TUT", "TUTConfig"]
