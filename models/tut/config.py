"""TUT's configs: the architecture (:class:`TUTConfig`), the training (:class:`TUTTrainConfig`)
and the presets of the paper's Table 10 (:data:`PRESETS`).

Where the paper and the released code (github ddz16/TUT) disagree, :class:`TUTConfig` has a
switch whose default is the released code:

``decoder_kv``           "released": the decoder's query *and key* come from the decoder
                         stream, only the value from the encoder; "paper" (Eq. 5): key and
                         value from the encoder.
``decoder_rpb``          False (released: decoder layers have no position bias); True gives
                         them scale-shared tables of their own (the paper is silent).
``attention_dropout_on`` "output" (released: dropout on the attention output, before the
                         output projection); "probs": on the attention probabilities.
``boundary_layers``      "encoder" (released: the boundary-aware loss reads the first
                         encoder layer); "encoder+decoder" (paper: also the last decoder layer).
``rpb``                  "shared" (paper's scale-shared encoding, Table 2; the released code
                         behind ``--rpe_use --rpe_share``), "per_stage", or "none".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..configs import Preset, check_choice, check_fraction, check_positive_ints, replace
from ..engine import TrainConfig

RPB_MODES = ("shared", "per_stage", "none")
DECODER_KV = ("released", "paper")
DROPOUT_ON = ("output", "probs")
BOUNDARY_LAYERS = ("encoder", "encoder+decoder")


@dataclass
class TUTConfig:
    """TUT's architecture and loss.

    Model: ``input_dim`` D, ``num_classes`` C, ``num_refinement`` M (stages = 1 + M),
    ``num_layers`` N (encoder and decoder layers per stage), ``window`` w (odd),
    ``d_model_pg`` / ``d_ffn_pg`` (prediction stage), ``d_model_r`` / ``d_ffn_r``
    (refinement stages), ``heads`` h, dropouts, ``activation``; the paper-vs-code switches
    are described in the module docstring. Loss: ``smooth_weight`` lambda and
    ``smooth_threshold`` theta of MS-TCN's truncated MSE, ``beta`` (boundary-aware loss
    weight, 0 turns it off).
    """

    input_dim: int = 2048
    num_classes: int = 19
    num_refinement: int = 3
    num_layers: int = 5
    window: int = 51
    d_model_pg: int = 128
    d_ffn_pg: int = 128
    d_model_r: int = 64
    d_ffn_r: int = 64
    heads: int = 4
    input_dropout: float = 0.4
    ffn_dropout: float = 0.3
    attention_dropout: float = 0.2
    activation: Literal["relu", "gelu"] = "relu"
    rpb: Literal["shared", "per_stage", "none"] = "shared"
    decoder_kv: Literal["released", "paper"] = "released"
    decoder_rpb: bool = False
    attention_dropout_on: Literal["output", "probs"] = "output"
    boundary_layers: Literal["encoder", "encoder+decoder"] = "encoder"
    smooth_weight: float = 0.15
    smooth_threshold: float = 4.0
    beta: float = 0.02

    def __post_init__(self) -> None:
        check_positive_ints(self, ("input_dim", "num_classes", "num_layers", "window", "d_model_pg", "d_ffn_pg",
                                   "d_model_r", "d_ffn_r", "heads"))
        check_positive_ints(self, ("num_refinement",), minimum=0)
        if self.window % 2 == 0:
            raise ValueError(f"TUTConfig.window must be odd, got {self.window}")
        for name in ("d_model_pg", "d_model_r"):
            if getattr(self, name) % self.heads:
                raise ValueError(f"TUTConfig.{name}={getattr(self, name)} must be divisible by heads={self.heads}")
        for name, options in (("rpb", RPB_MODES), ("decoder_kv", DECODER_KV), ("activation", ("relu", "gelu")),
                              ("attention_dropout_on", DROPOUT_ON), ("boundary_layers", BOUNDARY_LAYERS)):
            check_choice(self, name, options)
        check_fraction(self, ("input_dropout", "ffn_dropout", "attention_dropout"))

    @property
    def num_stages(self) -> int:
        return 1 + self.num_refinement

    def replace(self, **changes: Any) -> TUTConfig:
        return replace(self, **changes)


@dataclass
class TUTTrainConfig(TrainConfig):
    """TUT's training: the released code's Adam (beta2 = 0.98) and ``ReduceLROnPlateau(factor=0.5)``
    on the epoch's training loss, batches of one video; ``sample_rate`` keeps every n-th
    feature frame (50Salads: 2, as MS-TCN)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    betas: tuple[float, float] = (0.9, 0.98)
    scheduler: Literal["constant", "plateau", "cosine", "step"] = "plateau"
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    sample_rate: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(self, ("sample_rate",))


def _preset(name: str, description: str, model: dict[str, Any], train: dict[str, Any]) -> Preset:
    return Preset(name, TUTConfig(**model), TUTTrainConfig(**train), description)


#: The paper's Table 10 (epochs as the released README) and a CPU-sized ``small`` model.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("salads50", "50Salads (19 classes, features subsampled 30 -> 15 fps), paper Table 10",
            {"num_classes": 19, "num_layers": 5, "window": 51, "d_model_pg": 128, "d_ffn_pg": 128, "d_model_r": 64,
             "d_ffn_r": 64, "heads": 4, "input_dropout": 0.4, "beta": 0.02},
            {"lr": 5e-4, "weight_decay": 1e-5, "sample_rate": 2, "epochs": 150}),
    _preset("gtea", "GTEA (11 classes), paper Table 10",
            {"num_classes": 11, "num_layers": 4, "window": 11, "d_model_pg": 64, "d_ffn_pg": 64, "d_model_r": 64,
             "d_ffn_r": 64, "heads": 4, "input_dropout": 0.5, "beta": 0.1},
            {"lr": 5e-4, "weight_decay": 1e-5, "sample_rate": 1, "epochs": 100}),
    _preset("breakfast", "Breakfast (48 classes), paper Table 10",
            {"num_classes": 48, "num_layers": 5, "window": 25, "d_model_pg": 192, "d_ffn_pg": 192, "d_model_r": 96,
             "d_ffn_r": 96, "heads": 6, "input_dropout": 0.4, "beta": 0.005},
            {"lr": 2e-4, "weight_decay": 5e-5, "sample_rate": 1, "epochs": 100}),
    _preset("small", "a CPU-sized model for tests and the synthetic dataset (not from the paper)",
            {"input_dim": 32, "num_classes": 8, "num_refinement": 1, "num_layers": 3, "window": 9, "d_model_pg": 32,
             "d_ffn_pg": 32, "d_model_r": 16, "d_ffn_r": 16, "heads": 2, "input_dropout": 0.2, "ffn_dropout": 0.1,
             "attention_dropout": 0.1, "beta": 0.02},
            {"lr": 2e-3, "weight_decay": 0.0, "sample_rate": 1, "epochs": 20}),
)}
