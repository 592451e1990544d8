"""VidTr / C-VidTr (``fastlocal.models.vidtr``): the released architecture to the parameter and
the multiply-add, its token geometry, an independent re-statement of the released forward
pass as the oracle, backends, ``torch.compile``, other input sizes, the released-checkpoint
converter and ViT-B/16 inflation.

Numbers come from shared/specs/vidtr_gta.md §5 and §8 (measured there on the released
gluonmm classes). Full-size models are only built on the meta device or as fake tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from backends import backend_param
from fastlocal.models.vidtr import (
    PAPER_GFLOPS,
    PRESETS,
    VidTr,
    VidTrConfig,
    convert_released_state_dict,
    inflate_vit_state_dict,
    load_released_weights,
    load_vit_weights,
    macs_per_view,
)
from fastlocal.models.vidtr.model import CompactSeparableAttention

from fastlocal.topk_std import IMPLEMENTED as TOPK_IMPLEMENTED

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny models: 3 x 3 patches of 8 pixels, 16 channels in 2 heads
TINY = {"num_classes": 5, "image_size": 24, "patch_size": 8, "embed_dim": 16, "heads": 2, "mlp_dim": 24}
TINY_VIDTR = VidTrConfig(frames=3, depth=2, **TINY)
# pooling at layer 0 (where the positional embedding enters), a plain separable layer, a
# second pooling layer, then a joint layer
TINY_COMPACT = VidTrConfig(frames=4, depth=4, pool_layers=(0, 2), pool_keep=(3, 2), **TINY)


def _video(config: VidTrConfig, batch: int = 2, size: tuple[int, int] | None = None, seed: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    h, w = size or (config.image_size, config.image_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, config.frames, h, w, generator=generator).to(dtype)


def _model(config: VidTrConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> VidTr:
    torch.manual_seed(seed)
    model = VidTr(config).to(dtype)
    with torch.no_grad():  # the zero-initialised biases too: every weight must matter in the comparisons
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


# ---- sizes -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("preset", "params"), [
    ("vidtr-s", 87_473_296),
    ("vidtr-m", 88_689_808),
    ("vidtr-l", 91_122_832),
    ("c-vidtr-s", 87_159_952),
    ("c-vidtr-m", 88_364_176),
    ("c-vidtr-l", 90_772_624),  # the paper's Table 1 configuration, spec §5
])
def test_parameter_count_equals_released(preset, params):
    config = PRESETS[preset].model
    with torch.device("meta"):
        model = VidTr(config)
    assert config.num_classes == 400
    assert sum(p.numel() for p in model.parameters()) == params


def _analytic_macs(config: VidTrConfig) -> int:
    """Every matmul of the released forward, counted by hand (spec §5's breakdown)."""
    C, H, M = config.embed_dim, config.heads, config.mlp_dim
    d, T, N = C // H, config.temporal_size, config.grid ** 2
    macs = T * N * C * 3 * config.patch_size ** 2 * config.tubelet_size + C * config.num_classes
    mlp = 2 * C * M
    if not config.compact:
        R, P = T + 1, N + 1
        per_layer = R * P * (4 * C * C + mlp) + P * H * 2 * R * R * d + R * H * 2 * P * P * d
        return macs + config.depth * per_layer
    frames = T
    for g in config.geometry():
        if g.kind == "joint":
            L = 1 + frames * N
            macs += L * (4 * C * C + mlp) + H * 2 * L * L * d
            continue
        kept = g.frames
        macs += frames * N * 3 * C * C + kept * N * C * C + (1 + kept * N) * mlp  # in_proj, out_proj, MLP
        macs += N * H * (frames * frames + kept * frames) * d  # temporal scores, kept rows times values
        macs += kept * H * 2 * N * N * d  # spatial attention
        frames = kept
    return macs


@pytest.mark.parametrize(("preset", "gmacs"), [
    ("vidtr-s", 158.25), ("vidtr-m", 299.51), ("vidtr-l", 583.42),
    ("c-vidtr-s", 64.60), ("c-vidtr-m", 77.19), ("c-vidtr-l", 136.90),
])
def test_macs_per_view(preset, gmacs):
    config = PRESETS[preset].model
    macs = macs_per_view(config)
    assert macs == _analytic_macs(config)
    assert round(macs / 1e9, 2) == gmacs


def test_paper_gflops_are_mlp_and_stem_macs():
    """The reason PAPER_GFLOPS gives: where the paper's counts are consistent, they are the
    multiply-adds of the MLPs and the patch embedding alone (8 d² per patch token and layer)."""
    for preset in ("vidtr-s", "vidtr-m", "c-vidtr-s"):
        config = PRESETS[preset].model
        C, N = config.embed_dim, config.grid ** 2
        frames = [g.frames for g in config.geometry()]
        rule = sum(8 * C * C * f * N for f in frames) + config.temporal_size * N * C * 3 * 16 * 16
        assert rule / 1e9 == pytest.approx(PAPER_GFLOPS[preset], rel=0.025)
        assert macs_per_view(config) / 1e9 > 1.6 * PAPER_GFLOPS[preset]
    assert sorted(PAPER_GFLOPS) == sorted(PRESETS)


# ---- token geometry ------------------------------------------------------------------------------

def test_geometry_of_the_presets():
    s = PRESETS["vidtr-s"].model.geometry()
    assert len(s) == 12 and all((g.kind, g.frames, g.tokens) == ("separable", 8, 9 * 197) for g in s)
    cs = PRESETS["c-vidtr-s"].model
    assert cs.separable_frames == (8, 6, 6, 4, 4, 2)
    assert [g.kind for g in cs.geometry()[:6]] == ["separable", "pooling"] * 3
    assert cs.joint_layers == 6 and all(g.tokens == 393 for g in cs.geometry()[6:])
    cm = PRESETS["c-vidtr-m"].model
    assert cm.separable_frames == (16, 8, 4, 4, 2) and cm.joint_layers == 7
    assert cm.geometry()[-1].tokens == 1 + 2 * 196


@pytest.mark.parametrize("preset", ["vidtr-s", "c-vidtr-s", "c-vidtr-m"])
def test_forward_follows_the_geometry(preset):
    """A narrow model with the preset's frames, layers and 224² input: each layer's output holds
    the tokens the geometry says."""
    config = PRESETS[preset].model.replace(embed_dim=16, heads=2, mlp_dim=16, num_classes=3)
    model = VidTr(config).eval()
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        assert model(_video(config, batch=1)).shape == (1, 3)
    assert seen == [(1, g.tokens, 16) for g in config.geometry()]


# ---- the released forward pass, restated independently (the oracle) ---------------------------------

def _layer_norm(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"])


def _mlp(x, sd, layer, activation):
    act = F.relu if activation == "relu" else F.gelu
    hidden = act(x @ sd[f"{layer}.linear1.weight"].T + sd[f"{layer}.linear1.bias"])
    return hidden @ sd[f"{layer}.linear2.weight"].T + sd[f"{layer}.linear2.bias"]


def _qkv(y, sd, layer, heads):
    qkv = y @ sd[f"{layer}.self_attn.in_proj_weight"].T + sd[f"{layer}.self_attn.in_proj_bias"]
    return [z.unflatten(-1, (heads, -1)) for z in qkv.chunk(3, dim=-1)]


def _out_proj(o, sd, layer):
    return o.flatten(-2) @ sd[f"{layer}.self_attn.out_proj.weight"].T + sd[f"{layer}.self_attn.out_proj.bias"]


def _stem(video, sd):
    return F.conv3d(video, sd["conv_stem.weight"], sd["conv_stem.bias"], stride=sd["conv_stem.weight"].shape[2:])


def released_vidtr(video, sd, config):
    """VidTr as released (vidtr_split.py + MultiHeadSplitAttentionDualToken), token grid
    ``x[r, p, b, c]``: r = 0 the temporal class row, p = 0 the spatial class column."""
    s = _stem(video, sd)  # [B, C, T, h, w]
    B, C, T = s.shape[:3]
    frames = s.flatten(3).permute(2, 3, 0, 1)  # [T, N, B, C]
    frames = torch.cat([sd["cls_s"].view(T, 1, 1, C).expand(T, 1, B, C), frames], dim=1)
    x = torch.cat([sd["cls_t"].view(1, -1, 1, C).expand(1, -1, B, C), frames], dim=0)  # [R, P, B, C]
    R, P = x.shape[:2]
    pos = sd["pos_embedding"].view(R, P, 1, C)
    if config.pos_embed == "input":
        x = x + pos
    d = C // config.heads
    for i in range(config.depth):
        layer = f"encoder.layers.{i}"
        y = _layer_norm(x, sd, f"{layer}.norm1")
        if config.pos_embed == "every" or (config.pos_embed == "first" and i == 0):
            y = y + pos
        q, k, v = _qkv(y, sd, layer, config.heads)  # [R, P, B, H, d]
        attn_t = torch.einsum("rpbhd,spbhd->pbhrs", q, k).div(math.sqrt(d)).softmax(-1)
        out_t = torch.einsum("pbhrs,spbhd->rpbhd", attn_t, v)
        attn_s = torch.einsum("rpbhd,rubhd->rbhpu", q, k).div(math.sqrt(d)).softmax(-1)
        out = torch.einsum("rbhpu,rubhd->rpbhd", attn_s, out_t)
        x = x + _out_proj(out, sd, layer)
        x = x + _mlp(_layer_norm(x, sd, f"{layer}.norm2"), sd, layer, config.activation)
    cls = _layer_norm(x[0, 0], sd, "encoder.norm")
    return cls @ sd["fc.weight"].T + sd["fc.bias"]


def released_compact(video, sd, config):
    """C-VidTr as released (vidtr_compact.py + MultiHeadSequentialPoolAttentionVariableKSTDReverse
    + ScaledDotProductAttentionPoolVariableKSTD): class token ``cls[b, c]``, frames ``x[t, n, b, c]``."""
    s = _stem(video, sd)
    B, C, T = s.shape[:3]
    x = s.flatten(3).permute(2, 3, 0, 1)  # [T, N, B, C]
    N, H = x.shape[1], config.heads
    d = C // H
    cls = sd["cls"].view(1, C).expand(B, C)
    pos_cls, pos_x = sd["pos_embedding"][0, 0], sd["pos_embedding"][0, 1:].view(T, N, 1, C)
    if config.pos_embed == "input":
        cls, x = cls + pos_cls, x + pos_x
    pools = dict(zip(config.pool_layers, config.pool_keep, strict=True))
    z = None  # all tokens [L, B, C] once the joint layers start
    for i in range(config.depth):
        layer = f"encoder.layers.{i}"
        if i > config.pool_layers[-1]:  # nn.MultiheadAttention over every token
            if z is None:
                z = torch.cat([cls[None], x.reshape(-1, B, C)], dim=0)
            q, k, v = _qkv(_layer_norm(z, sd, f"{layer}.norm1"), sd, layer, H)  # [L, B, H, d]
            attn = torch.einsum("lbhd,mbhd->bhlm", q, k).div(math.sqrt(d)).softmax(-1)
            z = z + _out_proj(torch.einsum("bhlm,mbhd->lbhd", attn, v), sd, layer)
            z = z + _mlp(_layer_norm(z, sd, f"{layer}.norm2"), sd, layer, config.activation)
            continue
        y_cls, y = _layer_norm(cls, sd, f"{layer}.norm1"), _layer_norm(x, sd, f"{layer}.norm1")
        if config.pos_embed == "first" and i == 0:
            y_cls, y = y_cls + pos_cls, y + pos_x
        q, k, v = _qkv(y, sd, layer, H)  # [T, N, B, H, d]
        attn_t = torch.einsum("tnbhd,snbhd->nbhts", q, k).div(math.sqrt(d)).softmax(-1)
        if i in pools:
            # rows of the highest unbiased std over the keys, back in temporal order
            rows = attn_t.std(dim=-1).topk(pools[i], dim=-1).indices.sort(dim=-1).values  # [N, B, H, K]
            picked = attn_t.gather(3, rows[..., None].expand(*rows.shape, attn_t.shape[-1]))
            if config.second_softmax:
                picked = picked.softmax(-1)
            out_t = torch.einsum("nbhks,snbhd->knbhd", picked, v)

            def keep(z, rows=rows):  # z [T, N, B, H, e] -> the kept frames of each (n, b, h)
                index = rows.permute(3, 0, 1, 2)[..., None].expand(-1, -1, -1, -1, z.shape[-1])
                return z.gather(0, index)

            q, k = keep(q), keep(k)
            x = keep(x.unflatten(-1, (H, d))).flatten(-2)  # the residual, per head
        else:
            out_t = torch.einsum("nbhts,snbhd->tnbhd", attn_t, v)
        attn_s = torch.einsum("tnbhd,tmbhd->tbhnm", q, k).div(math.sqrt(d)).softmax(-1)
        out = torch.einsum("tbhnm,tmbhd->tnbhd", attn_s, out_t)
        cls = cls + y_cls  # the class token's "attention output" is its own normalised input
        x = x + _out_proj(out, sd, layer)
        cls = cls + _mlp(_layer_norm(cls, sd, f"{layer}.norm2"), sd, layer, config.activation)
        x = x + _mlp(_layer_norm(x, sd, f"{layer}.norm2"), sd, layer, config.activation)
    out = _layer_norm(z[0], sd, "encoder.norm")
    return out @ sd["fc.weight"].T + sd["fc.bias"]


# our names -> the released names, written from the released module attributes (conv_stem,
# pos_embedding, cls / cls_s / cls_t, encoder.layers.<i>.{self_attn, linear1, linear2, norm1,
# norm2}, encoder.norm, fc); independent of fastlocal.models.vidtr.weights' tables
_TO_RELEASED = [
    ("patch_embed.", "conv_stem."), ("cls_token", "cls"), ("cls_spatial", "cls_s"), ("cls_temporal", "cls_t"),
    ("pos_embed", "pos_embedding"), ("head.", "fc."), ("attn.in_proj.weight", "self_attn.in_proj_weight"),
    ("attn.in_proj.bias", "self_attn.in_proj_bias"), ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.fc1.", "linear1."), ("mlp.fc2.", "linear2."), ("blocks.", "encoder.layers."),
]


def to_released(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith("norm."):
            key = "encoder." + key
        for ours, theirs in _TO_RELEASED:
            key = key.replace(ours, theirs)
        out[key] = value.clone()
    return out


ORACLE_CASES = [
    pytest.param(TINY_VIDTR, id="vidtr"),
    pytest.param(TINY_VIDTR.replace(pos_embed="every", activation="gelu"), id="vidtr-pos-every-gelu"),
    pytest.param(TINY_VIDTR.replace(pos_embed="input"), id="vidtr-pos-input"),
    pytest.param(TINY_COMPACT, id="compact"),
    pytest.param(TINY_COMPACT.replace(second_softmax=False, pos_embed="input"), id="compact-one-softmax-pos-input"),
]


@pytest.mark.parametrize("config", ORACLE_CASES)
def test_matches_the_released_forward(config):
    model = _model(config, dtype=torch.float64).eval()
    video = _video(config, dtype=torch.float64)
    oracle = released_compact if config.compact else released_vidtr
    with torch.no_grad():
        want = oracle(video, to_released(model.state_dict()), config)
        got = model(video)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_pooling_keeps_different_frames_per_head_and_position():
    """The selection really is per (batch, head, spatial position), so the residual gather matters."""
    model = _model(TINY_COMPACT).eval()
    pooling = model.blocks[0].attn
    assert isinstance(pooling, CompactSeparableAttention) and pooling.keep == 3
    captured = []
    pooling.register_forward_hook(lambda module, args, out: captured.append(out[1]))
    with torch.no_grad():
        model(_video(TINY_COMPACT))
    index = captured[0]  # [B * N, H, keep]
    assert index.shape == (2 * 9, 2, 3)
    assert len({tuple(row) for row in index.reshape(-1, 3).tolist()}) > 1


# ---- training, backends, compile -----------------------------------------------------------------

@pytest.mark.parametrize("config", [TINY_VIDTR, TINY_COMPACT], ids=["vidtr", "compact"])
def test_every_parameter_gets_a_gradient(config):
    model = _model(config).train()
    logits = model(_video(config))
    F.cross_entropy(logits, torch.tensor([1, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backend", [backend_param("topk_std_attention", "cpu", TOPK_IMPLEMENTED)])
def test_backends_give_the_same_logits_and_gradients(backend):
    """float64, so that no std near-tie can pick different frames on the two backends."""
    results = []
    for name in ("reference", backend):
        model = _model(TINY_COMPACT, dtype=torch.float64).eval()
        model.backend = name
        video = _video(TINY_COMPACT, dtype=torch.float64).requires_grad_()
        logits = model(video)
        logits.pow(2).sum().backward()
        results.append((logits.detach(), video.grad, {n: p.grad for n, p in model.named_parameters()}))
    (logits_a, dvideo_a, grads_a), (logits_b, dvideo_b, grads_b) = results
    torch.testing.assert_close(logits_b, logits_a, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(dvideo_b, dvideo_a, rtol=1e-8, atol=1e-10)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-8, atol=1e-10, msg=name)


def test_backend_is_passed_to_the_pooling_op_and_checked():
    model = VidTr(TINY_COMPACT, backend="reference")
    assert {m.backend for m in model.modules() if isinstance(m, CompactSeparableAttention)} == {"reference"}
    with pytest.raises(ValueError, match="backend must be one of"):
        model.backend = "fast"


def test_runs_under_torch_compile():
    model = _model(TINY_COMPACT).eval()
    video = _video(TINY_COMPACT)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(video), model(video), rtol=1e-5, atol=1e-6)


# ---- other input sizes ---------------------------------------------------------------------------

def _bicubic(tokens: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """``[M, old * old, C]`` patch tokens resized to ``[M, new * new, C]``."""
    grid = tokens.unflatten(1, (old, old)).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)


@pytest.mark.parametrize("config", [TINY_VIDTR, TINY_COMPACT], ids=["vidtr", "compact"])
def test_other_input_size_interpolates_the_positional_embedding(config):
    """The model laid out for 24² run on 40² equals a model laid out for 40² whose tables are
    the bicubic resize of the 24² ones (class entries unchanged)."""
    small = _model(config, dtype=torch.float64).eval()
    large = VidTr(config.replace(image_size=40)).to(torch.float64).eval()
    state = small.state_dict()
    C, T = config.embed_dim, config.temporal_size
    if config.compact:
        pos = state["pos_embed"][0]
        state["pos_embed"] = torch.cat([pos[:1], _bicubic(pos[1:].view(T, 9, C), 3, 5).reshape(-1, C)])[None]
    else:
        pos = state["pos_embed"].view(T + 1, 10, C)
        state["pos_embed"] = torch.cat([pos[:, :1], _bicubic(pos[:, 1:], 3, 5)], dim=1).reshape(1, -1, C)
        cls_t = state["cls_temporal"]
        state["cls_temporal"] = torch.cat([cls_t[:, :1], _bicubic(cls_t[:, 1:], 3, 5)], dim=1)
    large.load_state_dict(state)
    video = _video(config, size=(40, 40), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(small(video), large(video), rtol=1e-10, atol=1e-10)
        assert torch.isfinite(small(_video(config, batch=1, size=(16, 40), dtype=torch.float64))).all()


def test_bad_video_is_refused():
    model = VidTr(TINY_COMPACT)
    with pytest.raises(ValueError, match="multiples of patch_size=8"):
        model(_video(TINY_COMPACT, size=(24, 20)))
    with pytest.raises(ValueError, match=r"video must be \[B, 3, 4, H, W\]"):
        model(torch.randn(1, 3, 3, 24, 24))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 3, 4, 24, 24, dtype=torch.uint8))


@pytest.mark.parametrize(("changes", "message"), [
    ({"embed_dim": 20, "heads": 3}, "divisible by heads"),
    ({"image_size": 30}, "multiple of patch_size"),
    ({"pool_keep": (3,)}, "one entry per pooling layer"),
    ({"pool_layers": (2, 1)}, "increasing"),
    ({"pool_layers": (0, 3)}, "below depth - 1"),
    ({"pool_keep": (3, 4)}, "must keep 1..3"),
    ({"pos_embed": "every"}, "pos_embed='every'"),
    ({"activation": "silu"}, "activation must be one of"),
])
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        TINY_COMPACT.replace(**changes)


# ---- released checkpoints ------------------------------------------------------------------------

@pytest.mark.parametrize("config", [TINY_VIDTR, TINY_COMPACT], ids=["vidtr", "compact"])
def test_released_checkpoint_round_trip(config, tmp_path):
    model = _model(config)
    released = {"module." + k: v for k, v in to_released(model.state_dict()).items()}  # saved under DDP
    torch.save({"model": released, "epoch": 49}, tmp_path / "released.pth")
    fresh = VidTr(config)
    load_released_weights(fresh, tmp_path / "released.pth")
    want = model.state_dict()
    assert fresh.state_dict().keys() == want.keys()
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, want[name]), name


@pytest.mark.parametrize("preset", ["vidtr-m", "c-vidtr-s"])
def test_released_layout_of_the_full_models(preset):
    config = PRESETS[preset].model
    with torch.device("meta"):
        model = VidTr(config)
    state = model.state_dict()
    converted = convert_released_state_dict(to_released(state), config)
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in state.items()}


def test_released_converter_is_strict():
    released = to_released(_model(TINY_COMPACT).state_dict())
    with pytest.raises(ValueError, match=r"unknown keys \['encoder.layers.0.self_attn.bias_k'\]"):
        convert_released_state_dict({**released, "encoder.layers.0.self_attn.bias_k": torch.zeros(1)}, TINY_COMPACT)
    with pytest.raises(ValueError, match=r"missing keys \['encoder.layers.3.linear2.bias', 'fc.bias'\]"):
        convert_released_state_dict({k: v for k, v in released.items()
                                     if k not in ("fc.bias", "encoder.layers.3.linear2.bias")}, TINY_COMPACT)
    with pytest.raises(ValueError, match=r"'pos_embedding' has shape \(1, 36, 16\), the config needs \(1, 37, 16\)"):
        convert_released_state_dict({**released, "pos_embedding": torch.zeros(1, 36, 16)}, TINY_COMPACT)
    # a C-VidTr checkpoint for a VidTr config names both class-token kinds
    with pytest.raises(ValueError, match=r"unknown keys \['cls'.*missing keys \[.*'cls_s', 'cls_t'"):
        convert_released_state_dict(released, TINY_COMPACT.replace(pool_layers=(), pool_keep=()))


# ---- ImageNet ViT-B/16 inflation -----------------------------------------------------------------

def _timm_vit(config: VidTrConfig, grid: int | None = None, seed: int = 1) -> dict[str, torch.Tensor]:
    """A ViT state dict in timm's layout with ``config``'s widths (random values)."""
    g = torch.Generator().manual_seed(seed)
    C, M, p = config.embed_dim, config.mlp_dim, config.patch_size
    grid = config.grid if grid is None else grid

    def r(*shape):
        return torch.randn(*shape, generator=g)

    state = {"cls_token": r(1, 1, C), "pos_embed": r(1, 1 + grid * grid, C), "patch_embed.proj.weight": r(C, 3, p, p),
             "patch_embed.proj.bias": r(C), "norm.weight": r(C), "norm.bias": r(C), "head.weight": r(1000, C),
             "head.bias": r(1000)}
    for i in range(config.depth):
        shapes = {"norm1": (C,), "attn.qkv": (3 * C, C), "attn.proj": (C, C), "norm2": (C,), "mlp.fc1": (M, C),
                  "mlp.fc2": (C, M)}
        for name, shape in shapes.items():
            state[f"blocks.{i}.{name}.weight"] = r(*shape)
            state[f"blocks.{i}.{name}.bias"] = r(shape[0])
    return state


def _torchvision_vit(timm: dict[str, torch.Tensor], old_mlp_names: bool = False) -> dict[str, torch.Tensor]:
    """The same ViT in torchvision's ``vit_b_16`` layout."""
    fc1, fc2 = ("linear_1", "linear_2") if old_mlp_names else ("0", "3")
    top = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding", "patch_embed.proj.weight":
           "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias", "norm.weight": "encoder.ln.weight",
           "norm.bias": "encoder.ln.bias", "head.weight": "heads.head.weight", "head.bias": "heads.head.bias"}
    block = {"norm1": "ln_1", "attn.qkv.weight": "self_attention.in_proj_weight", "attn.qkv.bias":
             "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj", "norm2": "ln_2",
             "mlp.fc1": f"mlp.{fc1}", "mlp.fc2": f"mlp.{fc2}"}
    out = {}
    for key, value in timm.items():
        if key in top:
            out[top[key]] = value
            continue
        _, i, rest = key.split(".", 2)
        for ours, theirs in block.items():
            if rest.startswith(ours):
                out[f"encoder.layers.encoder_layer_{i}.{theirs}{rest[len(ours):]}"] = value
                break
    assert len(out) == len(timm)
    return out


@pytest.mark.parametrize("config", [TINY_VIDTR, TINY_COMPACT.replace(frames=8, tubelet_size=2)],
                         ids=["vidtr", "compact-tubelet-2"])
def test_vit_inflation_as_released(config):
    vit = _timm_vit(config)
    model = _model(config)
    head = model.head.weight.clone()
    load_vit_weights(model, vit)
    C, T, N = config.embed_dim, config.temporal_size, config.grid ** 2
    cls, pos = vit["cls_token"].view(C), vit["pos_embed"][0]
    if config.compact:
        assert torch.equal(model.cls_token.detach().view(C), cls)
        assert torch.equal(model.pos_embed[0, 0].detach(), pos[0])
        assert torch.equal(model.pos_embed[0, 1:].detach().view(T, N, C), pos[1:].expand(T, N, C))
    else:  # every one of the T + 1 token rows starts as ViT's 1 + N embeddings
        assert torch.equal(model.pos_embed.detach().view(T + 1, N + 1, C), pos.expand(T + 1, N + 1, C))
        assert torch.equal(model.cls_spatial.detach().view(T, C), cls.expand(T, C))
        assert torch.equal(model.cls_temporal.detach().view(N + 1, C), cls.expand(N + 1, C))
    kernel = vit["patch_embed.proj.weight"]
    tubelet = config.tubelet_size
    assert torch.equal(model.patch_embed.weight.detach(), kernel.unsqueeze(2).expand(-1, -1, tubelet, -1, -1) / tubelet)
    assert torch.equal(model.blocks[1].attn.in_proj.weight.detach(), vit["blocks.1.attn.qkv.weight"])
    assert torch.equal(model.blocks[0].mlp.fc2.bias.detach(), vit["blocks.0.mlp.fc2.bias"])
    assert torch.equal(model.norm.weight.detach(), vit["norm.weight"])
    assert torch.equal(model.head.weight.detach(), head)  # the classifier keeps its own init


@pytest.mark.parametrize("old_mlp_names", [False, True])
def test_torchvision_and_timm_layouts_inflate_alike(old_mlp_names, tmp_path):
    timm = _timm_vit(TINY_COMPACT)
    torch.save(_torchvision_vit(timm, old_mlp_names), tmp_path / "vit_b_16.pth")
    from_timm = inflate_vit_state_dict(timm, TINY_COMPACT)
    model = VidTr(TINY_COMPACT)
    load_vit_weights(model, tmp_path / "vit_b_16.pth")
    state = model.state_dict()
    assert sorted(from_timm) == sorted(k for k in state if not k.startswith("head."))
    for name, value in from_timm.items():
        assert torch.equal(state[name], value), name


def test_vit_of_another_resolution_is_interpolated():
    vit = _timm_vit(TINY_VIDTR, grid=5)
    state = inflate_vit_state_dict(vit, TINY_VIDTR)
    pos = vit["pos_embed"][0]
    row = torch.cat([pos[:1], _bicubic(pos[None, 1:], 5, 3)[0]])
    assert torch.allclose(state["pos_embed"].view(4, 10, 16), row.expand(4, 10, 16), atol=1e-6)


def test_vit_inflation_is_strict():
    vit = _timm_vit(TINY_VIDTR)
    with pytest.raises(ValueError, match=r"unknown keys \['blocks.0.ls1.gamma'\]"):
        inflate_vit_state_dict({**vit, "blocks.0.ls1.gamma": torch.ones(16)}, TINY_VIDTR)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.2.attn.proj.bias'"):
        inflate_vit_state_dict(vit, TINY_VIDTR.replace(depth=3))
    with pytest.raises(ValueError, match=r"patch kernel 'patch_embed\.proj\.weight' has shape"):
        inflate_vit_state_dict({**vit, "patch_embed.proj.weight": torch.zeros(16, 3, 16, 16)}, TINY_VIDTR)
    with pytest.raises(ValueError, match="not a ViT state dict"):
        inflate_vit_state_dict({"fc.weight": torch.zeros(2, 2)}, TINY_VIDTR)
