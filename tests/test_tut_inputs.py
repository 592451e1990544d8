"""TUT.forward refuses bad inputs with a TypeError / ValueError naming ``x`` or ``lengths`` (issue 21)."""

from __future__ import annotations

import pytest
import torch
from fastlocal.models.tut.config import PRESETS
from fastlocal.models.tut.model import TUT


def tiny_model() -> TUT:
    torch.manual_seed(0)
    config = PRESETS["small"].model.replace(
        input_dim=12, num_classes=5, num_refinement=1, num_layers=2, window=5, d_model_pg=8, d_ffn_pg=8,
        d_model_r=8, d_ffn_r=8, heads=2,
    )
    return TUT(config).eval()


X = torch.randn(2, 10, 12)

BAD = [
    ("lengths-fractional", lambda m: m(X, torch.tensor([9.7, 5.2])), TypeError, r"lengths must hold integer .*float32"),
    ("lengths-whole-floats", lambda m: m(X, torch.tensor([10.0, 5.0])), TypeError, "lengths must hold integer"),
    ("lengths-float-list", lambda m: m(X, [9.5, 5]), TypeError, "lengths must be an integer tensor"),
    ("lengths-bool", lambda m: m(X, torch.tensor([True, True])), TypeError, "lengths must hold integer"),
    ("lengths-str", lambda m: m(X, "10"), TypeError, "lengths"),
    ("lengths-range", lambda m: m(X, torch.tensor([10, 11])), ValueError, r"lengths must be \[B\] = \[2\]"),
    ("lengths-zero", lambda m: m(X, [10, 0]), ValueError, r"values in \[1, 10\]"),
    ("lengths-shape", lambda m: m(X, torch.tensor([[10, 5]])), ValueError, r"lengths must be \[B\]"),
    ("lengths-count", lambda m: m(X, [10]), ValueError, r"lengths must be \[B\] = \[2\]"),
    ("x-empty-batch", lambda m: m(torch.randn(0, 10, 12)), ValueError, r"x must hold at least one video"),
    ("x-no-frames", lambda m: m(torch.randn(2, 0, 12)), ValueError, "x must have at least one frame"),
    ("x-int64", lambda m: m(torch.zeros(2, 10, 12, dtype=torch.long)), TypeError, r"x must hold floating-point.*int64"),
    ("x-bool", lambda m: m(torch.zeros(2, 10, 12, dtype=torch.bool)), TypeError, "x must hold floating-point"),
    ("x-float64", lambda m: m(X.double()), TypeError, r"x has dtype torch.float64 but .*float32"),
    ("x-list", lambda m: m([[[0.0] * 12]]), TypeError, "x must be a torch.Tensor"),
    ("x-shape", lambda m: m(torch.randn(2, 10, 11)), ValueError, r"x must be \[B, T, 12\]"),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_inputs_named(call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_model())


def test_good_inputs():
    model = tiny_model()
    with torch.no_grad():
        reference = model(X, torch.tensor([10, 5])).logits
        torch.testing.assert_close(model(X, [10, 5]).logits, reference, rtol=0, atol=0)  # a list of ints
        torch.testing.assert_close(model(X, torch.tensor([10, 5], dtype=torch.int32)).logits, reference)
        assert model.double()(X.double()).logits.dtype == torch.float64  # x and model cast alike
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes bfloat16 and float32
            assert model(X.bfloat16()).logits.shape == (2, 2, 10, 5)
