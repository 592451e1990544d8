"""Video Swin backbone (fastlocal.models.backbones.video_swin) and the chunked encoder (chunks.py):
torchvision's swin3d state-dict layout and parameter counts, strict local loading (torchvision and
mmaction layouts), shifted-window attention against brute-force oracles, padding, gradient
checkpointing, drop path, frozen stages, and chunked encoding against encoding each chunk alone."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from fastlocal.models import backbones
from fastlocal.models.backbones.chunks import ChunkEncoder
from fastlocal.models.backbones.video_swin import (
    DropPath,
    PatchEmbed3d,
    PatchMerging,
    ShiftedWindowAttention3d,
    VideoSwin,
    VideoSwinConfig,
    load_video_swin,
    parameter_count,
    shifted_window_attention_mask,
    swin3d_b,
    swin3d_t,
)
from fastlocal.models.configs import from_dict, to_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# A tiny config: 4 stages, two blocks in stage 2 (one shifted), windows (2, 3, 3).
TINY = VideoSwinConfig(embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3),
                       drop_path=0.0)


def tiny(**changes: object) -> VideoSwin:
    torch.manual_seed(0)
    fields = {**TINY.__dict__, **changes}
    return VideoSwin(VideoSwinConfig(**fields))


def torchvision_swin3d_t_keys() -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's ``swin3d_t()`` state dict (keys in order, shapes), written from
    torchvision/models/video/swin_transformer.py and swin_transformer.py: PatchEmbed3d(proj Conv3d 3->96
    k=s=(2,4,4), norm), per stage i (dim 96*2**i, heads 3*2**i) blocks of SwinTransformerBlock (norm1;
    attn = ShiftedWindowAttention3d: relative_position_bias_table [15*13*13, heads] registered after
    qkv/proj but a module's own parameters and buffers come first in state_dict, the
    relative_position_index buffer [392, 392]; norm2; MLP = Linear, GELU, Dropout, Linear, Dropout),
    a PatchMerging (norm 4*dim, reduction 4*dim -> 2*dim without bias) between stages, norm, head 768->400."""
    keys = [("patch_embed.proj.weight", (96, 3, 2, 4, 4)), ("patch_embed.proj.bias", (96,)),
            ("patch_embed.norm.weight", (96,)), ("patch_embed.norm.bias", (96,))]
    for stage, depth in enumerate((2, 2, 6, 2)):
        dim, heads = 96 * 2**stage, 3 * 2**stage
        for j in range(depth):
            p = f"features.{2 * stage}.{j}."
            keys += [(p + "norm1.weight", (dim,)), (p + "norm1.bias", (dim,)),
                     (p + "attn.relative_position_bias_table", (2535, heads)),
                     (p + "attn.relative_position_index", (392, 392)),
                     (p + "attn.qkv.weight", (3 * dim, dim)), (p + "attn.qkv.bias", (3 * dim,)),
                     (p + "attn.proj.weight", (dim, dim)), (p + "attn.proj.bias", (dim,)),
                     (p + "norm2.weight", (dim,)), (p + "norm2.bias", (dim,)),
                     (p + "mlp.0.weight", (4 * dim, dim)), (p + "mlp.0.bias", (4 * dim,)),
                     (p + "mlp.3.weight", (dim, 4 * dim)), (p + "mlp.3.bias", (dim,))]
        if stage < 3:
            p = f"features.{2 * stage + 1}."
            keys += [(p + "norm.weight", (4 * dim,)), (p + "norm.bias", (4 * dim,)),
                     (p + "reduction.weight", (2 * dim, 4 * dim))]
    return [*keys, ("norm.weight", (768,)), ("norm.bias", (768,)), ("head.weight", (400, 768)), ("head.bias", (400,))]


def test_state_dict_is_torchvision_swin3d_t():
    with torch.device("meta"):
        model = swin3d_t(num_classes=400)
    state = model.state_dict()
    expected = torchvision_swin3d_t_keys()
    assert len(expected) == 185
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected
    assert state["features.0.0.attn.relative_position_index"].dtype == torch.int64
    # feature mode: the same keys less the head
    with torch.device("meta"):
        features_only = swin3d_t()
    assert list(features_only.state_dict()) == [k for k, _ in expected[:-2]]


def test_parameter_counts_match_torchvision():
    # torchvision's documented num_params (with the 400-class head): swin3d_t 28,158,070; swin3d_s 49,816,678;
    # swin3d_b 88,048,984
    t = VideoSwinConfig(num_classes=400)
    assert parameter_count(t) == 28_158_070
    assert parameter_count(VideoSwinConfig(depths=(2, 2, 18, 2), num_classes=400)) == 49_816_678
    b = VideoSwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), num_classes=400)
    assert parameter_count(b) == 88_048_984
    assert parameter_count(VideoSwinConfig()) == 28_158_070 - (768 * 400 + 400)
    with torch.device("meta"):
        assert swin3d_b().out_channels == 1024 and swin3d_t().out_channels == 768


def test_relative_position_index_is_row_major_offset():
    attn = ShiftedWindowAttention3d(4, (2, 3, 3), (0, 0, 0), 1)
    coords = list(itertools.product(range(2), range(3), range(3)))
    for i, (a, b) in enumerate(itertools.product(coords, coords)):
        dd, dh, dw = (a[k] - b[k] for k in range(3))
        expected = ((dd + 1) * 5 + dh + 2) * 5 + dw + 2
        assert attn.relative_position_index.flatten()[i] == expected


def _brute_mask(padded, window, shift) -> torch.Tensor:
    """-100 between tokens of one window whose positions are on different sides of the wrap of the
    cyclic shift along some shifted axis (position p wrapped iff p >= size - shift)."""
    starts = itertools.product(*(range(0, n, w) for n, w in zip(padded, window, strict=True)))
    masks = []
    for start in starts:
        offsets = itertools.product(*(range(w) for w in window))
        tokens = [tuple(s + o for s, o in zip(start, off, strict=True)) for off in offsets]
        m = torch.zeros(len(tokens), len(tokens))
        for i, a in enumerate(tokens):
            for j, b in enumerate(tokens):
                if any(s and (a[k] >= padded[k] - s) != (b[k] >= padded[k] - s) for k, s in enumerate(shift)):
                    m[i, j] = -100.0
        masks.append(m)
    return torch.stack(masks)


@pytest.mark.parametrize("padded,window,shift", [((4, 6, 6), (2, 3, 3), (1, 1, 1)),
                                                 ((4, 6, 9), (2, 3, 3), (0, 1, 1)),
                                                 ((6, 4, 4), (3, 2, 4), (1, 1, 0))])
def test_shifted_window_mask_against_brute_force(padded, window, shift):
    mask = shifted_window_attention_mask(padded, window, shift)
    expected = _brute_mask(padded, window, shift)
    assert mask.shape == expected.shape
    assert torch.equal(mask, expected)
    assert (mask != 0).any()  # a shift always separates some pairs here


def _bias(attn: ShiftedWindowAttention3d, a, b) -> torch.Tensor:
    wd, wh, ww = attn.window_size
    dd, dh, dw = (a[k] - b[k] for k in range(3))
    return attn.relative_position_bias_table[((dd + wd - 1) * (2 * wh - 1) + dh + wh - 1) * (2 * ww - 1) + dw + ww - 1]


def _attend(attn, x_tokens, coords, mask=None) -> torch.Tensor:
    """Plain multi-head attention of tokens ``[n, C]`` at ``coords`` with the relative bias (and ``mask``)."""
    n, c = x_tokens.shape
    heads = attn.num_heads
    q, k, v = (attn.qkv(x_tokens)).view(n, 3, heads, c // heads).permute(1, 2, 0, 3)
    bias = torch.stack([torch.stack([_bias(attn, a, b) for b in coords]) for a in coords]).permute(2, 0, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads) + bias + (0 if mask is None else mask)
    return attn.proj((scores.softmax(-1) @ v).transpose(0, 1).reshape(n, c))


@pytest.mark.parametrize("size", [(2, 3, 3), (1, 3, 3), (2, 2, 3)])
def test_window_attention_equals_global_attention_on_one_window(size):
    # the map is no larger than the window: one window covers it, the shift is dropped, and windowed
    # attention is plain global attention with the bias at the true offsets (also where the window shrinks)
    torch.manual_seed(1)
    attn = ShiftedWindowAttention3d(8, (2, 3, 3), (1, 1, 1), 2).eval()
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    attn.double()
    coords = list(itertools.product(*(range(n) for n in size)))
    with torch.no_grad():
        out = attn(x)
        for b in range(2):
            expected = _attend(attn, x[b].reshape(-1, 8), coords).view(*size, 8)
            torch.testing.assert_close(out[b], expected, rtol=1e-10, atol=1e-12)


def _naive_shifted_window_attention(attn, x) -> torch.Tensor:
    """Loops: pad to whole windows, roll by -shift, attend within each window (mask -100 across the
    wrap, bias at the offsets), roll back, crop."""
    b, *size, c = x.shape
    window = [min(n, w) for n, w in zip(size, attn.window_size, strict=True)]
    shift = [0 if n <= w else s for n, w, s in zip(size, attn.window_size, attn.shift_size, strict=True)]
    padded = [math.ceil(n / w) * w for n, w in zip(size, window, strict=True)]
    xp = torch.zeros(b, *padded, c, dtype=x.dtype)
    xp[:, : size[0], : size[1], : size[2]] = x
    xp = torch.roll(xp, [-s for s in shift], (1, 2, 3))
    out = torch.zeros_like(xp)
    for start in itertools.product(*(range(0, n, w) for n, w in zip(padded, window, strict=True))):
        local = list(itertools.product(*(range(w) for w in window)))
        coords = [tuple(s + o for s, o in zip(start, off, strict=True)) for off in local]
        mask = torch.tensor([[-100.0 if any(s and (p[k] >= padded[k] - s) != (q[k] >= padded[k] - s)
                                            for k, s in enumerate(shift)) else 0.0 for q in coords] for p in coords],
                            dtype=x.dtype)
        for i in range(b):
            tokens = torch.stack([xp[i][p] for p in coords])
            res = _attend(attn, tokens, local, mask)
            for p, r in zip(coords, res, strict=True):
                out[i][p] = r
    out = torch.roll(out, shift, (1, 2, 3))
    return out[:, : size[0], : size[1], : size[2]]


@pytest.mark.parametrize("size,shift", [((3, 5, 7), (1, 1, 1)), ((4, 6, 6), (1, 1, 1)), ((5, 4, 8), (0, 0, 0))])
def test_shifted_window_attention_against_loops(size, shift):
    # maps not divisible by the window (padding), shifted and not
    torch.manual_seed(2)
    attn = ShiftedWindowAttention3d(8, (2, 3, 3), shift, 2).double().eval()
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _naive_shifted_window_attention(attn, x), rtol=1e-10, atol=1e-12)


def test_patch_merging_and_embedding_against_loops():
    torch.manual_seed(4)
    merge = PatchMerging(3).double()
    x = torch.randn(2, 2, 5, 3, 3, dtype=torch.float64)  # odd H and W: zero row / column appended
    out = merge(x)
    assert out.shape == (2, 2, 3, 2, 6)
    xp = F.pad(x, (0, 0, 0, 1, 0, 1))
    for b, t, i, j in itertools.product(range(2), range(2), range(3), range(2)):
        # torchvision's order: (h, w) = (0, 0), (1, 0), (0, 1), (1, 1) of each 2x2 block
        cat = torch.cat([xp[b, t, 2 * i, 2 * j], xp[b, t, 2 * i + 1, 2 * j], xp[b, t, 2 * i, 2 * j + 1],
                         xp[b, t, 2 * i + 1, 2 * j + 1]])
        torch.testing.assert_close(out[b, t, i, j], merge.reduction(merge.norm(cat)))
    embed = PatchEmbed3d((2, 4, 4), 5).double()
    clip = torch.randn(1, 3, 3, 6, 9, dtype=torch.float64)
    emb = embed(clip)
    assert emb.shape == (1, 2, 2, 3, 5)
    cp = F.pad(clip, (0, 3, 0, 2, 0, 1))
    for t, i, j in itertools.product(range(2), range(2), range(3)):
        patch = cp[0, :, 2 * t: 2 * t + 2, 4 * i: 4 * i + 4, 4 * j: 4 * j + 4]
        linear = (embed.proj.weight * patch).sum(dim=(1, 2, 3, 4)) + embed.proj.bias
        torch.testing.assert_close(emb[0, t, i, j], embed.norm(linear))


def test_forward_shapes_and_end_padding_for_odd_sizes():
    model = tiny().eval()
    x = torch.randn(2, 3, 5, 37, 29)
    with torch.no_grad():
        feats = model.forward_features(x)
        # T' = ceil(5/2) = 3; H: ceil(37/4) = 10 -> 5 -> 3 -> 2; W: ceil(29/4) = 8 -> 4 -> 2 -> 1
        assert feats.shape == (2, 3, 2, 1, 64)
        assert torch.isfinite(feats).all()
        # the input is zero-padded at the end of each axis, to (6, 40, 32)
        padded = F.pad(x, (0, 3, 0, 3, 0, 1))
        torch.testing.assert_close(model.forward_features(padded), feats, rtol=0, atol=0)
        pooled = model(x)
        torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))
        assert pooled.shape == (2, 3, 64)
    head = tiny(num_classes=5).eval()
    with torch.no_grad():
        logits = head(x)
        assert logits.shape == (2, 5)
        torch.testing.assert_close(logits, head.head(head.forward_features(x).mean(dim=(1, 2, 3))))


def test_strict_loading_torchvision_layout(tmp_path):
    source, target = tiny(num_classes=5), tiny(num_classes=5)
    torch.manual_seed(3)
    target.apply(lambda m: m.reset_parameters() if isinstance(m, torch.nn.Linear) else None)
    path = tmp_path / "swin.pt"
    torch.save(source.state_dict(), path)
    load_video_swin(target, path)
    x = torch.randn(1, 3, 4, 24, 24)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))
    # a feature-mode model drops the file's head; a prefix is stripped
    features = tiny()
    torch.save({"backbone." + k: v for k, v in source.state_dict().items()}, tmp_path / "prefixed.pt")
    load_video_swin(features, tmp_path / "prefixed.pt", prefix="backbone.")
    with torch.no_grad():
        assert torch.equal(features.eval().forward_features(x), source.forward_features(x))
    state = source.state_dict()
    broken = {k: v for k, v in state.items() if k != "features.2.1.attn.relative_position_bias_table"}
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing\.pt.*missing keys: features\.2\.1\.attn\.relative_position_bias"):
        load_video_swin(tiny(num_classes=5), tmp_path / "missing.pt")
    torch.save({**state, "features.9.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected keys: features\.9\.weight"):
        load_video_swin(tiny(num_classes=5), tmp_path / "extra.pt")
    torch.save(state, tmp_path / "head.pt")
    with pytest.raises(ValueError, match=r"head\.weight \(5, 64\) \(model: \(7, 64\)\)"):
        load_video_swin(tiny(num_classes=7), tmp_path / "head.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("head.")}, tmp_path / "nohead.pt")
    with pytest.raises(ValueError, match=r"missing keys: head\.weight, head\.bias"):
        load_video_swin(tiny(num_classes=5), tmp_path / "nohead.pt")
    with pytest.raises(ValueError, match=r"no key starts with prefix 'module\.'"):
        load_video_swin(tiny(), path, prefix="module.")
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        load_video_swin(tiny(), tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="layout must be one of"):
        load_video_swin(tiny(), path, layout="timm")


def _to_mmaction(key: str) -> str:
    """torchvision -> the original Video Swin repository's key (inverse of mmaction_to_torchvision)."""
    parts = key.split(".")
    if parts[0] == "features":
        i = int(parts[1])
        if i % 2 == 0:
            rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            return f"backbone.layers.{i // 2}.blocks.{parts[2]}.{rest}"
        return f"backbone.layers.{i // 2}.downsample." + ".".join(parts[2:])
    if parts[0] == "head":
        return "cls_head.fc_cls." + parts[1]
    return "backbone." + key


def test_loading_mmaction_layout(tmp_path):
    source = tiny(num_classes=5)
    state = {_to_mmaction(k): v for k, v in source.state_dict().items()}
    assert "backbone.layers.1.blocks.1.mlp.fc2.weight" in state and "backbone.layers.2.downsample.reduction.weight" \
        in state
    state["backbone.layers.0.blocks.0.dummy_tensor"] = torch.ones(1)  # the released checkpointing buffer
    torch.save(state, tmp_path / "mm.pt")
    target, with_head = tiny(), tiny(num_classes=5)
    load_video_swin(target, tmp_path / "mm.pt", layout="mmaction")
    load_video_swin(with_head, tmp_path / "mm.pt", layout="mmaction")
    x = torch.randn(1, 3, 4, 24, 24)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), source.eval().forward_features(x).mean(dim=(2, 3)))
        assert torch.equal(with_head.eval()(x), source(x))
    # TALLFormer's backbone-only file has no "backbone." prefix
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")},
               tmp_path / "tall.pt")
    load_video_swin(target, tmp_path / "tall.pt", layout="mmaction")
    with pytest.raises(ValueError, match=r"mmaction layout\): missing keys: head\.weight"):
        load_video_swin(tiny(num_classes=5), tmp_path / "tall.pt", layout="mmaction")


def _loss_and_grads(model: VideoSwin, x: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = tiny(drop_path=0.3).train()
    ckpt = tiny(drop_path=0.3, gradient_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    ckpt.features[2][0].register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 4, 20, 20)
    out_a, grads_a = _loss_and_grads(plain, x, seed=5)
    out_b, grads_b = _loss_and_grads(ckpt, x, seed=5)
    assert len(calls) == 2  # forward, and the recomputation in backward
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7, msg=name)
    # drop path was active: another seed gives other outputs
    out_c, _ = _loss_and_grads(plain, x, seed=6)
    assert not torch.allclose(out_c, out_a)


def test_drop_path_rates_and_eval():
    model = tiny(drop_path=0.5)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.5 * i / 6 for i in range(7)])  # linear over the 7 blocks, 0 first
    reference = tiny(drop_path=0.0)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 4, 20, 20)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), rtol=0, atol=0)
    drop = DropPath(0.5).train()
    y = drop(torch.ones(4000, 3))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert (y[:, 0:1] == y).all()  # one draw per sample
    assert abs(y.mean().item() - 1.0) < 0.1
    assert torch.equal(drop.eval()(y), y)
    with pytest.raises(ValueError, match="DropPath p"):
        DropPath(1.0)


@pytest.mark.parametrize("frozen", [0, 2])
def test_frozen_stages_get_no_gradient(frozen):
    model = tiny(frozen_stages=frozen, gradient_checkpointing=True).train()
    frozen_prefixes = ("patch_embed.", *tuple(f"features.{i}." for i in range(2 * frozen)))
    assert all(not m.training for m in model.frozen_modules()) and model.features[-1].training
    _, grads = _loss_and_grads(model, torch.randn(1, 3, 4, 20, 20), seed=0)
    for name, p in model.named_parameters():
        if name.startswith(frozen_prefixes):
            assert not p.requires_grad and name not in grads, name
        else:
            assert name in grads and grads[name].abs().sum() > 0, name


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        VideoSwinConfig(embed_dim=10, num_heads=(3, 6, 12, 24))
    with pytest.raises(ValueError, match="one entry per stage"):
        VideoSwinConfig(depths=(2, 2), num_heads=(3, 6, 12))
    with pytest.raises(ValueError, match="window_size must be 3 ints"):
        VideoSwinConfig(window_size=(7, 7))
    with pytest.raises(ValueError, match=r"frozen_stages must be an int in \[-1, 4\]"):
        VideoSwinConfig(frozen_stages=5)
    with pytest.raises(ValueError, match="drop_path must be a probability"):
        VideoSwinConfig(drop_path=1.0)
    assert VideoSwinConfig(depths=[2, 2, 6, 2]).depths == (2, 2, 6, 2)
    assert from_dict(VideoSwinConfig, to_dict(TINY)) == TINY  # to_dict turns tuples into lists
    for ratio in (0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="mlp_ratio must be finite"):
            VideoSwinConfig(mlp_ratio=ratio)
    with pytest.raises(ValueError, match="clips must be"):
        tiny()(torch.randn(1, 4, 4, 8, 8))


def test_chunked_encoding_equals_each_chunk_alone():
    backbone = tiny().eval()
    encoder = ChunkEncoder(backbone, chunk_frames=4)
    video = torch.randn(2, 3, 11, 20, 24)
    with torch.no_grad():
        out = encoder(video)
        assert out.shape == (2, 6, 64)  # ceil(11 / 2) rows
        last = F.pad(video[:, :, 8:], (0, 0, 0, 0, 0, 1))
        expected = torch.cat([backbone(video[:, :, 0:4]), backbone(video[:, :, 4:8]), backbone(last)], dim=1)[:, :6]
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        chunks = encoder.split(video)
        assert chunks.shape == (2, 3, 3, 4, 20, 24)
        torch.testing.assert_close(encoder.merge(encoder.encode_chunks(chunks), 11), out, rtol=0, atol=0)
    assert (encoder.num_chunks(11), encoder.num_rows(11), encoder.rows_per_chunk) == (3, 6, 2)
    with pytest.raises(ValueError, match="3 frames, fewer than one chunk of 4"):
        encoder(video[:, :, :3])
    with pytest.raises(ValueError, match="multiple of the backbone's temporal patch size 2"):
        ChunkEncoder(backbone, chunk_frames=5)
    with pytest.raises(ValueError, match="no classification head"):
        ChunkEncoder(tiny(num_classes=3))
    with pytest.raises(ValueError, match="video must be"):
        encoder(torch.randn(2, 11, 3, 20, 24))


def test_swin_b_chunk_gives_16_by_1024_on_meta():
    # TALLFormer: a 32-frame 224x224 chunk -> [16, 1024]; a 480-frame window -> 15 chunks, 240 rows
    with torch.device("meta"):
        encoder = ChunkEncoder(swin3d_b(drop_path=0.2, frozen_stages=2, gradient_checkpointing=True).eval())
        assert encoder.encode_chunks(torch.empty(1, 3, 32, 224, 224)).shape == (1, 16, 1024)
    assert (encoder.num_chunks(480), encoder.num_rows(480), encoder.num_rows(481)) == (15, 240, 241)
    assert backbones.swin3d_b is swin3d_b and backbones.ChunkEncoder is ChunkEncoder  # the package exports them
