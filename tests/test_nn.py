"""``fastlocal.nn.LocalAttention`` / ``RelativePositionBias`` against a hand-written PyTorch layer.

``DenseLocalAttention`` below is what a user would write without fastlocal: linear
projections, a dense ``[T, T]`` score matrix, an explicit band mask and a bias gathered
by relative offset (docs/design.md). It shares no code with fastlocal. The tests copy its
weights into ``LocalAttention`` and expect the same outputs, gradients and rows.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastlocal
from fastlocal.nn import LocalAttention, RelativePositionBias

F64 = torch.float64
E, H, B, T = 16, 4, 2, 13
TOL = {"rtol": 1e-10, "atol": 1e-12}

# (window, window_left, window_right, edge): centred, causal, NATTEN shift, wider than 2T-1 (full).
WINDOWS = [(5, None, None, "clip"), (7, 3, 0, "clip"), (5, None, None, "shift"), (31, None, None, "clip")]
WINDOW_IDS = ["clip5", "causal3", "shift5", "full"]


pytestmark = pytest.mark.usefixtures("one_thread")


class DenseLocalAttention(nn.Module):
    """Hand-written local attention: dense scores, banded mask, bias table, softmax."""

    def __init__(self, embed_dim: int, num_heads: int, left: int, right: int, edge: str,
                 kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        self.h, self.left, self.right, self.edge = num_heads, left, right, edge
        self.wq = nn.Linear(embed_dim, embed_dim)
        self.wk = nn.Linear(kdim or embed_dim, embed_dim)
        self.wv = nn.Linear(vdim or embed_dim, embed_dim)
        self.wo = nn.Linear(embed_dim, embed_dim)
        w = left + right + 1
        self.bias_table = nn.Parameter(torch.randn(num_heads, w if edge == "clip" else 2 * w - 1))

    def window_start(self, i: torch.Tensor, t: int) -> torch.Tensor:
        w = self.left + self.right + 1
        if self.edge == "clip":
            return i - self.left
        return torch.clamp(i - self.left, 0, max(t - w, 0))  # NATTEN: shifted inside [0, T)

    def probs(self, query, key, key_padding_mask=None) -> torch.Tensor:
        """Dense ``[B, H, T, T]`` attention probabilities; rows with no visible key are 0."""
        b, t, e = query.shape
        q = self.wq(query).view(b, t, self.h, -1).transpose(1, 2)
        k = self.wk(key).view(b, t, self.h, -1).transpose(1, 2)
        s = q @ k.transpose(-1, -2) * (e // self.h) ** -0.5
        i = torch.arange(t)[:, None]
        j = torch.arange(t)[None, :]
        start = self.window_start(i, t)
        band = (j >= start) & (j < start + self.left + self.right + 1)
        offset = self.left if self.edge == "clip" else self.left + self.right
        s = s + self.bias_table[:, (j - i + offset).clamp(0, self.bias_table.shape[1] - 1)]
        allowed = band.expand(b, 1, t, t)
        if key_padding_mask is not None:
            allowed = allowed & ~key_padding_mask[:, None, None, :]
        empty = ~allowed.any(-1, keepdim=True)
        p = torch.softmax(s.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0), dim=-1)
        return p.masked_fill(empty, 0.0)

    def forward(self, query, key=None, value=None, key_padding_mask=None) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        b, t, e = query.shape
        v = self.wv(value).view(b, t, self.h, -1).transpose(1, 2)
        out = self.probs(query, key, key_padding_mask) @ v
        return self.wo(out.transpose(1, 2).reshape(b, t, e))


def make_pair(window, window_left, window_right, edge, kdim=None, vdim=None, seed=0):
    """A dense layer with random weights and a ``LocalAttention`` holding a copy of them."""
    torch.manual_seed(seed)
    attn = LocalAttention(E, H, window, window_left=window_left, window_right=window_right, edge=edge,
                          kdim=kdim, vdim=vdim).double()
    g = attn.geometry
    dense = DenseLocalAttention(E, H, g.left, g.right, edge, kdim, vdim).double()
    with torch.no_grad():
        for mine, theirs in [(attn.q_proj, dense.wq), (attn.k_proj, dense.wk), (attn.v_proj, dense.wv),
                             (attn.out_proj, dense.wo)]:
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
        attn.rpb.table.copy_(dense.bias_table)
    return dense, attn


def padding_mask() -> torch.Tensor:
    # Batch 1 pads its last 6 frames, so its last rows (clip, causal) see no key at all.
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, T - 6:] = True
    return mask


def inputs(cross: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, E, dtype=F64, generator=g)
    if not cross:
        return x, None, None
    return x, torch.randn(B, T, 12, dtype=F64, generator=g), torch.randn(B, T, 10, dtype=F64, generator=g)


# --------------------------------------------------------------------------- (a, b) drop-in


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize(("window", "wl", "wr", "edge"), WINDOWS, ids=WINDOW_IDS)
def test_matches_dense_layer(window, wl, wr, edge, masked, cross):
    dense, attn = make_pair(window, wl, wr, edge, *((12, 10) if cross else (None, None)))
    query, key, value = inputs(cross)
    mask = padding_mask() if masked else None
    leaves = [t for t in (query, key, value) if t is not None]
    for t in leaves:
        t.requires_grad_(True)
    weight = torch.randn(B, T, E, dtype=F64)

    expected = dense(query, key, value, mask)
    got, probs = attn(query, key, value, key_padding_mask=mask)
    assert probs is None
    torch.testing.assert_close(got, expected, **TOL)

    # (b) gradients w.r.t. inputs, projections and the bias table.
    dense_params = [dense.wq.weight, dense.wk.bias, dense.wv.weight, dense.wo.weight, dense.bias_table]
    attn_params = [attn.q_proj.weight, attn.k_proj.bias, attn.v_proj.weight, attn.out_proj.weight, attn.rpb.table]
    want = torch.autograd.grad((expected * weight).sum(), leaves + dense_params)
    have = torch.autograd.grad((got * weight).sum(), leaves + attn_params)
    for w, h in zip(want, have, strict=True):
        torch.testing.assert_close(h, w, **TOL)


def test_no_bias_matches_dense_layer_with_zero_table():
    dense, attn = make_pair(5, None, None, "clip")
    plain = LocalAttention(E, H, 5, rpb=False).double()
    plain.load_state_dict({k: v for k, v in attn.state_dict().items() if not k.startswith("rpb.")})
    with torch.no_grad():
        dense.bias_table.zero_()
    x, _, _ = inputs(False)
    assert plain.rpb is None
    torch.testing.assert_close(plain(x)[0], dense(x), **TOL)


# --------------------------------------------------------------------------- (c) shared bias


def test_shared_relative_position_bias():
    torch.manual_seed(0)
    shared = RelativePositionBias(H, 5)
    first = LocalAttention(E, H, 5, rpb=shared).double()
    second = LocalAttention(E, H, 5, rpb=shared).double()
    assert first.rpb is second.rpb is shared
    stack = nn.ModuleList([first, second])
    assert sum(p is shared.table for p in stack.parameters()) == 1  # one parameter, not two

    x, _, _ = inputs(False)
    g_first = torch.autograd.grad(first(x)[0].sum(), shared.table)[0]
    g_second = torch.autograd.grad(second(first(x)[0])[0].sum(), shared.table)[0]
    (first(x)[0].sum() + second(first(x)[0])[0].sum()).backward()
    torch.testing.assert_close(shared.table.grad, g_first + g_second, **TOL)
    assert g_first.abs().sum() > 0 and g_second.abs().sum() > 0

    # A state dict round trip keeps the sharing (both keys load into the same tensor).
    copy = nn.ModuleList([LocalAttention(E, H, 5, rpb=RelativePositionBias(H, 5)) for _ in range(2)]).double()
    copy[1].rpb = copy[0].rpb
    copy.load_state_dict(stack.state_dict())
    assert copy[0].rpb.table is copy[1].rpb.table
    torch.testing.assert_close(copy[0].rpb.table, shared.table, rtol=0, atol=0)


# --------------------------------------------------------------------------- (d) attention rows


@pytest.mark.parametrize("batched_rows", [False, True], ids=["rows", "batch-rows"])
@pytest.mark.parametrize(("window", "wl", "wr", "edge"), WINDOWS, ids=WINDOW_IDS)
def test_need_weights_rows_match_dense_softmax(window, wl, wr, edge, batched_rows):
    dense, attn = make_pair(window, wl, wr, edge)
    x, _, _ = inputs(False)
    mask = padding_mask()
    rows = torch.tensor([[0, 6, 12], [12, 1, 9]]) if batched_rows else torch.tensor([0, 6, 12, 3])
    _, probs = attn(x, key_padding_mask=mask, need_weights_rows=rows)
    R, g = rows.shape[-1], attn.geometry
    w = g.left + g.right + 1
    assert probs.shape == (B, H, R, w)

    full = dense.probs(x, x, mask)  # [B, H, T, T]
    rows_b = rows.expand(B, R)
    keys = dense.window_start(rows_b, T)[..., None] + torch.arange(w)  # [B, R, w]: entry m is key start + m
    inside = (keys >= 0) & (keys < T)
    picked = full[torch.arange(B)[:, None, None, None], torch.arange(H)[None, :, None, None],
                  rows_b[:, None, :, None], keys.clamp(0, T - 1)[:, None]]
    expected = picked * inside[:, None]
    torch.testing.assert_close(probs, expected, **TOL)
    # The rows are differentiable (TUT's boundary loss trains through them).
    probs[..., 0].sum().backward()
    assert attn.q_proj.weight.grad is not None and attn.rpb.table.grad is not None


# --------------------------------------------------------------------------- (e) module plumbing


def test_state_dict_round_trip():
    torch.manual_seed(0)
    src = LocalAttention(E, H, 5, edge="shift", kdim=12, vdim=10)
    torch.manual_seed(1)
    dst = LocalAttention(E, H, 5, edge="shift", kdim=12, vdim=10)
    assert set(src.state_dict()) == {f"{p}.{w}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")
                                     for w in ("weight", "bias")} | {"rpb.table"}
    assert src.rpb.table.shape == (H, 9)  # 2 * window - 1 for shift
    dst.load_state_dict(src.state_dict())
    x, k, v = (t.float() for t in inputs(True))
    torch.testing.assert_close(dst(x, k, v)[0], src(x, k, v)[0], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_conversion(dtype):
    torch.manual_seed(0)
    attn = LocalAttention(E, H, 5)
    x = torch.randn(B, T, E)
    reference = attn(x)[0]
    converted = attn.half() if dtype == torch.float16 else attn.to(dtype)
    assert converted.rpb.table.dtype == dtype
    out, probs = converted(x.to(dtype), need_weights_rows=torch.tensor([0, 7]))
    assert out.dtype == probs.dtype == dtype and out.shape == (B, T, E)
    tol = 1e-5 if dtype == F64 else 5e-2  # the float32 module is the reference here
    torch.testing.assert_close(out.float(), reference, rtol=tol, atol=tol)


def test_bias_table_follows_activations_under_autocast():
    torch.manual_seed(0)
    attn = LocalAttention(E, H, 5)
    x = torch.randn(B, T, E)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attn(x)[0], rtol=5e-2, atol=5e-2)


def test_backend_is_selected_by_use_backend():
    torch.manual_seed(0)
    attn = LocalAttention(E, H, 5)
    x = torch.randn(B, T, E)
    with fastlocal.use_backend("reference"):
        torch.testing.assert_close(attn(x)[0], attn(x)[0], rtol=0, atol=0)


def test_init_and_repr():
    torch.manual_seed(0)
    bias = RelativePositionBias(8, 63)
    assert bias.table.abs().max() <= 0.04 and 0.01 < bias.table.std() < 0.03  # trunc_normal(std=0.02)
    assert bias() is bias.table
    attn = LocalAttention(E, H, 7, window_left=3, window_right=0, dropout=0.1, kdim=12, vdim=10)
    assert repr(attn).startswith(
        "LocalAttention(\n  embed_dim=16, num_heads=4, window=7, window_left=3, window_right=0, edge='clip', "
        "dropout=0.1, kdim=12, vdim=10\n  (q_proj): Linear(in_features=16, out_features=16, bias=True)"
    )
    assert "(rpb): RelativePositionBias(num_heads=4, window=7, window_left=3, window_right=0, edge='clip')" in repr(
        attn)
    assert repr(RelativePositionBias(2, 5, edge="shift")) == "RelativePositionBias(num_heads=2, window=5, edge='shift')"
    no_bias = LocalAttention(E, H, 5, rpb=None, bias=False)
    assert no_bias.rpb is None and no_bias.q_proj.bias is None
    assert len(list(no_bias.parameters())) == 4


# --------------------------------------------------------------------------- (f) bad arguments


def _raises(exc: type[Exception], name: str, fn) -> None:
    with pytest.raises(exc, match=name):
        fn()


def test_bad_constructor_arguments():
    _raises(ValueError, "embed_dim", lambda: LocalAttention(10, 4, 5))
    _raises(ValueError, "window", lambda: LocalAttention(E, H, 4))
    _raises(ValueError, "edge", lambda: LocalAttention(E, H, 5, edge="wrap"))
    _raises(ValueError, "dropout", lambda: LocalAttention(E, H, 5, dropout=1.0))
    _raises(TypeError, "num_heads", lambda: LocalAttention(E, 4.0, 5))
    _raises(TypeError, "rpb", lambda: LocalAttention(E, H, 5, rpb="yes"))
    _raises(ValueError, "rpb", lambda: LocalAttention(E, H, 5, rpb=RelativePositionBias(H + 1, 5)))
    _raises(ValueError, "rpb", lambda: LocalAttention(E, H, 5, rpb=RelativePositionBias(H, 7)))
    _raises(ValueError, "rpb", lambda: LocalAttention(E, H, 5, rpb=RelativePositionBias(H, 5, edge="shift")))
    _raises(ValueError, "rpb", lambda: LocalAttention(E, H, 5, window_right=0, rpb=RelativePositionBias(H, 5)))
    _raises(ValueError, "num_heads", lambda: RelativePositionBias(0, 5))
    _raises(ValueError, "window_left", lambda: RelativePositionBias(H, 5, window_left=-1))
    # A shared table with the same resolved geometry is accepted whatever `window` was spelled as.
    LocalAttention(E, H, 3, window_left=2, window_right=2, rpb=RelativePositionBias(H, 5))


def test_bad_forward_inputs():
    attn = LocalAttention(E, H, 5, kdim=12)
    x = torch.randn(B, T, E)
    k = torch.randn(B, T, 12)
    _raises(ValueError, "query", lambda: attn(x[0]))
    _raises(TypeError, "query", lambda: attn(x.numpy()))
    _raises(ValueError, "query", lambda: attn(torch.randn(B, T, E + 1), k))
    _raises(ValueError, "key", lambda: attn(x, k[:, :-1]))
    _raises(ValueError, "key", lambda: attn(x, k[None]))
    _raises(ValueError, "key", lambda: attn(x))  # key defaults to query, which has E != kdim features
    _raises(ValueError, "value", lambda: attn(x, k, torch.randn(B, T, 3)))
    _raises(ValueError, "key_padding_mask", lambda: attn(x, k, x, key_padding_mask=torch.zeros(B, T + 1, dtype=bool)))
    _raises(TypeError, "key_padding_mask", lambda: attn(x, k, x, key_padding_mask=torch.zeros(B, T)))
    _raises(ValueError, "rows", lambda: attn(x, k, x, need_weights_rows=torch.tensor([T])))


def test_input_dtype_must_match_the_module():
    attn = LocalAttention(E, H, 5, kdim=12)
    x, k = torch.randn(B, T, E), torch.randn(B, T, 12)
    with pytest.raises(TypeError) as info:
        attn(x.double(), k.double(), x.double())
    message = str(info.value)
    assert "query has dtype torch.float64" in message and "parameters have dtype torch.float32" in message
    assert "query.to(torch.float32)" in message and ".double()" in message
    _raises(TypeError, "key has dtype torch.float16", lambda: attn(x, k.half(), x))
    _raises(TypeError, "value has dtype torch.bfloat16", lambda: attn(x, k, x.bfloat16()))
    _raises(TypeError, "query has dtype torch.float32 but this LocalAttention's parameters have dtype torch.float64",
            lambda: attn.double()(x, k.double(), x.double()))
    assert attn(x.double(), k.double(), x.double())[0].dtype == torch.float64  # the module is double now
    attn.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float32 and bfloat16, not float64
        assert attn(x.bfloat16(), k, x)[0].dtype == torch.bfloat16
        _raises(TypeError, "query has dtype torch.float64", lambda: attn(x.double(), k, x))


# --------------------------------------------------------------------------- (g) dropout


def test_dropout_eval_deterministic_train_reproducible():
    torch.manual_seed(0)
    attn = LocalAttention(E, H, 5, dropout=0.5).eval()
    plain = LocalAttention(E, H, 5)
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(B, T, E)
    rows = torch.tensor([2, 9])
    eval_out, eval_probs = attn(x, need_weights_rows=rows)
    torch.testing.assert_close(attn(x)[0], eval_out, rtol=0, atol=0)
    torch.testing.assert_close(plain(x)[0], eval_out, rtol=0, atol=0)  # eval mode: no dropout at all

    attn.train()
    torch.manual_seed(123)
    first, train_probs = attn(x, need_weights_rows=rows)
    torch.manual_seed(123)
    again, _ = attn(x, need_weights_rows=rows)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.allclose(first, eval_out)
    assert not torch.allclose(attn(x)[0], first)  # a fresh draw without reseeding
    # The returned rows are the softmax before dropout, in either mode.
    torch.testing.assert_close(train_probs, eval_probs, rtol=0, atol=0)
