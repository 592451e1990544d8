"""GTA (fastlocal.nn.GlobalTemporalAttention, fastlocal.models.gta): the block against a plain loop
transcription of the paper's Eq. 1-8 (float64), its multiply-adds against a closed form, the paper's
Table 1 parameter and multiply-add budgets of every preset (meta device / fake tensors), frame order,
gradients of the temporal matrices, torch.compile, other input sizes, the non-local baseline block
against its own transcription, and strict loading of a torchvision-layout ResNet-50 checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch._dynamo.testing
import torch.nn.functional as F
from fastlocal.models.backbones import ResNet2D, load_resnet
from fastlocal.models.configs import from_dict, to_dict
from fastlocal.models.gta import GTA, PAPER_BUDGETS, PRESETS, TINY_PRESETS, GTAConfig, NonLocalBlock, load_imagenet
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import fastlocal.flop_formulas  # noqa: F401  (counts scaled_dot_product_attention on the CPU)
from fastlocal.nn import GlobalTemporalAttention
from fastlocal.reference.global_temporal_attention import batch_norm_eval as _bn_eval
from fastlocal.reference.global_temporal_attention import global_temporal_attention as gta_oracle
from fastlocal.reference.global_temporal_attention import linear as _linear
from fastlocal.reference.global_temporal_attention import max_pool_tokens as _pool
from fastlocal.reference.global_temporal_attention import softmax as _softmax

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TINY_PRESETS["gta-tiny"].model


# ----------------------------------------------------------------------------- oracles


def non_local_oracle(m: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    n, C, h, w = x.shape
    T = m.frames
    X = x.reshape(n // T, T, C, h * w).transpose(-1, -2)
    Q = _linear(m.theta, X).flatten(1, 2)
    K = _pool(_linear(m.phi, X), h, w, m.spatial_pool).flatten(1, 2)
    V = _pool(_linear(m.g, X), h, w, m.spatial_pool).flatten(1, 2)
    A = _softmax(Q @ K.transpose(-1, -2) / math.sqrt(m.inner), -1) @ V  # every (t, pixel) pair of the clip
    Y = X + _bn_eval(m.norm, _linear(m.out, A.reshape(X.shape[0], T, h * w, -1)))
    return Y.transpose(-1, -2).reshape(n, C, h, w)


def _randomise_norms(module: torch.nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            for t in (bn.weight, bn.bias, bn.running_mean):
                t.data.normal_()
            bn.running_var.data.uniform_(0.5, 2.0)


GTA_CASES = [
    # frames, channels, H, W, kwargs
    (4, 32, 5, 7, {"groups": 4, "regions": 3, "spatial_heads": 2}),
    (3, 16, 6, 6, {"groups": 2, "regions": 5, "spatial_pool": 1, "region_normalize": "regions", "norm": "batch"}),
    (2, 64, 3, 4, {"groups": 8, "reduction": 2, "regions": 2, "spatial_pool": 3, "region_transform": "static",
                   "static_size": (3, 4)}),
    (8, 32, 1, 1, {"groups": 8, "reduction": 1, "regions": 1}),
]


@pytest.mark.parametrize(("frames", "channels", "h", "w", "kwargs"), GTA_CASES)
def test_gta_matches_transcription_of_eq_1_to_8(frames, channels, h, w, kwargs):
    torch.manual_seed(0)
    m = GlobalTemporalAttention(channels, frames, **kwargs).double().eval()
    _randomise_norms(m)
    x = torch.randn(2 * frames, channels, h, w, dtype=torch.float64)
    expected = gta_oracle(m, x)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)
    # [B, C, T, H, W] in, the same layout out
    x5 = x.reshape(2, frames, channels, h, w).transpose(1, 2)
    torch.testing.assert_close(m(x5), expected.reshape(2, frames, channels, h, w).transpose(1, 2),
                               rtol=1e-10, atol=1e-10)
    assert expected.sub(x).abs().max() > 0.1  # the block is not the identity at initialisation (norm "none")


def test_gta_parameters_and_state_dict():
    m = GlobalTemporalAttention(512, 8)
    assert m.inner == 128
    # [G, N_h, T, T] per branch, G = N_h = 8; Kaiming normal with fan-in G T
    for p in (m.pixel_attention, m.region_attention):
        assert p.shape == (8, 8, 8, 8)
        assert abs(p.std().item() - math.sqrt(2 / 64)) < 0.01
    assert sorted(m.state_dict()) == sorted([
        "theta.weight", "phi.weight", "g.weight", "spatial_out.weight", "spatial_out.bias", "pixel_value.weight",
        "region_value.weight", "region_logits.weight", "pixel_attention", "region_attention", "out.weight",
        "out.bias"])
    # 2 C^2 weights (C/4 inner width everywhere) + the output biases + W_R's D x R + 2 G^2 T^2
    assert sum(p.numel() for p in m.parameters()) == 2 * 512**2 + 2 * 512 + 128 * 8 + 2 * 8**4
    state = m.state_dict()
    again = GlobalTemporalAttention(512, 8)
    again.load_state_dict(state, strict=True)
    assert torch.equal(again.pixel_attention, m.pixel_attention)
    static = GlobalTemporalAttention(64, 4, groups=4, region_transform="static", static_size=(7, 5))
    assert static.region_logits.shape == (4, 8, 35)
    with pytest.raises(ValueError, match="built for 7x5 inputs, got 7x6"):
        static(torch.randn(4, 64, 7, 6))


def test_gta_refuses_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="divisible by groups=8"):
        GlobalTemporalAttention(80, 8)  # inner 20
    with pytest.raises(ValueError, match="region_transform"):
        GlobalTemporalAttention(64, 4, groups=4, region_transform="learned")
    with pytest.raises(ValueError, match="static_size"):
        GlobalTemporalAttention(64, 4, groups=4, region_transform="static")
    with pytest.raises(ValueError, match="static_size"):
        GlobalTemporalAttention(64, 4, groups=4, static_size=(4, 4))
    m = GlobalTemporalAttention(64, 4, groups=4)
    with pytest.raises(ValueError, match=r"multiple of T = 4"):
        m(torch.randn(6, 64, 3, 3))
    with pytest.raises(ValueError, match="C = 64"):
        m(torch.randn(4, 32, 3, 3))
    with pytest.raises(ValueError, match="T = frames = 4"):
        m(torch.randn(1, 64, 5, 3, 3))


def _closed_form_macs(C, T, h, w, clips, D, G, R, pool):
    n, hw = clips * T, h * w
    pooled = -(-h // pool) * -(-w // pool)
    convs = n * hw * (3 * C * D + D * C + 2 * C * D + D * R + 2 * D * C)
    spatial = 2 * n * hw * pooled * D  # scores and weighted values
    pixel = clips * hw * G * T * T * D  # (G T) x (G T) times (G T) x D/G per pixel
    region = 2 * n * R * hw * D + clips * R * G * T * T * D  # W_R V, its transpose back, GTA on regions
    return convs + spatial + pixel + region


@pytest.mark.parametrize(("C", "T", "h", "w", "G", "R", "pool"), [(64, 4, 6, 5, 4, 3, 2), (32, 8, 4, 4, 8, 8, 1)])
def test_gta_multiply_adds_closed_form(C, T, h, w, G, R, pool):
    m = GlobalTemporalAttention(C, T, groups=G, regions=R, spatial_pool=pool)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(torch.randn(2 * T, C, h, w))
    assert counter.get_total_flops() // 2 == _closed_form_macs(C, T, h, w, 2, C // 4, G, R, pool)


def test_gta_frame_order_matters_unlike_average_pooling():
    torch.manual_seed(1)
    m = GlobalTemporalAttention(32, 6, groups=4, regions=3).double()
    x = torch.randn(2, 6, 32, 4, 5, dtype=torch.float64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = m(x.flatten(0, 1)).reshape(2, 6, 32, 4, 5)
    out_perm = m(x[:, perm].flatten(0, 1)).reshape(2, 6, 32, 4, 5)
    # a permutation-equivariant temporal layer (dot-product attention) would give out[:, perm]
    assert (out_perm - out[:, perm]).abs().max() > 0.1
    # the clip-level average differs too, where temporal average pooling of the input cannot tell
    torch.testing.assert_close(x[:, perm].mean(1), x.mean(1))
    assert (out_perm.mean(1) - out.mean(1)).abs().max() > 0.1


def test_model_logits_depend_on_frame_order_only_with_gta():
    torch.manual_seed(2)
    video = torch.randn(2, 3, TINY.frames, 32, 32)
    reverse = video.flip(2)
    tsn = GTA(TINY.replace(block="none")).eval()
    torch.testing.assert_close(tsn(reverse), tsn(video), rtol=1e-5, atol=1e-6)  # average consensus
    gta = GTA(TINY).eval()
    logits, reversed_logits = gta(video), gta(reverse)
    assert (logits - reversed_logits).abs().max() > 1e-3 * logits.abs().max()


def test_gradient_reaches_every_temporal_matrix():
    torch.manual_seed(3)
    model = GTA(TINY)
    logits = model(torch.randn(2, 3, TINY.frames, 32, 32))
    F.cross_entropy(logits, torch.tensor([1, 7])).backward()
    blocks = model.temporal_blocks()
    assert list(blocks) == ["layer2.0", "layer3.0"]
    for position, block in blocks.items():
        for name in ("pixel_attention", "region_attention"):
            grad = getattr(block, name).grad
            assert grad is not None and grad.shape == (4, 4, 4, 4), (position, name)
            assert (grad != 0).all(), (position, name)  # every entry of every [T, T] matrix (g, k)
    assert all(p.grad is not None for p in model.parameters())


def test_compile_fullgraph_without_graph_breaks():
    torch.manual_seed(4)
    m = GlobalTemporalAttention(32, 4, groups=4, regions=3)
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(m, backend=counter, fullgraph=True)
    x = torch.randn(8, 32, 5, 6)
    torch.testing.assert_close(compiled(x), m(x))
    x5 = torch.randn(1, 32, 4, 7, 3)
    torch.testing.assert_close(compiled(x5), m(x5))
    assert counter.frame_count == 2  # one graph per input layout, no break
    # the whole model (C2D time pooling included) captures as one graph too
    model = GTA(TINY.replace(time_pool=2)).eval()
    counter = torch._dynamo.testing.CompileCounter()
    video = torch.randn(2, 3, TINY.frames, 32, 32)
    torch.testing.assert_close(torch.compile(model, backend=counter, fullgraph=True)(video), model(video))
    assert counter.frame_count == 1


def test_non_local_block_matches_transcription():
    torch.manual_seed(5)
    m = NonLocalBlock(32, 3, reduction=2, spatial_pool=2).double().eval()
    _randomise_norms(m)
    x = torch.randn(6, 32, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), non_local_oracle(m, x), rtol=1e-10, atol=1e-10)
    fresh = NonLocalBlock(32, 3)
    assert torch.equal(fresh(x.float()), x.float())  # BN scale starts at zero: the identity
    # Wang et al.'s embedded Gaussian at inner C / 2: 2 C^2 weights + 4.5 C biases and BN
    assert sum(p.numel() for p in fresh.parameters()) == 2 * 32**2 + 4.5 * 32


# ----------------------------------------------------------------------------- budgets


def _count(config: GTAConfig, size: int = 224) -> tuple[int, int, dict[str, tuple[int, ...]]]:
    """Parameters (meta device), multiply-adds of one clip (fake tensors) and each block's input shape."""
    with torch.device("meta"):
        params = sum(p.numel() for p in GTA(config).parameters())
    seen: dict[str, tuple[int, ...]] = {}
    with FakeTensorMode():
        model = GTA(config).eval()
        for position, block in model.temporal_blocks().items():
            block.register_forward_pre_hook(lambda mod, args, p=position: seen.__setitem__(p, tuple(args[0].shape)))
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            logits = model(torch.empty(1, 3, config.frames, size, size))
        assert logits.shape == (1, config.num_classes)
    return params, counter.get_total_flops() // 2, seen


RES3, RES4 = (512, 28, 28), (1024, 14, 14)


@pytest.mark.parametrize(("preset", "params", "macs", "shapes"), [
    # measured; the paper's Table 1 (tolerances below): 23.9 M / 32.7 G, 31.2 M / 61.1 G, 31.2 M / 50.2 G
    ("r2d50", 23_864_558, 32_697_446_400, {}),
    ("r2d50-nl", 31_223_022, 61_097_865_216, {"layer2.1": (8, *RES3), "layer3.5": (8, *RES4)}),
    ("r2d50-gta", 31_261_934, 50_138_001_408, {"layer2.1": (8, *RES3), "layer2.3": (8, *RES3),
                                               "layer3.1": (8, *RES4), "layer3.3": (8, *RES4),
                                               "layer3.5": (8, *RES4)}),
])
def test_paper_table_1_budgets(preset, params, macs, shapes):
    config = PRESETS[preset].model
    got_params, got_macs, seen = _count(config)
    assert (got_params, got_macs) == (params, macs)
    paper_gmacs, paper_mparams = PAPER_BUDGETS[preset]
    if preset == "r2d50":
        # ResNet-50 without its 1000-way fc (23,508,032) + a 2048 x 174 classifier
        assert got_params == 25_557_032 - 2048 * 1000 - 1000 + 2048 * 174 + 174
        assert abs(got_params - 23.87e6) < 0.01e6
    else:
        assert abs(got_params - paper_mparams * 1e6) <= 0.002 * paper_mparams * 1e6  # +-0.2%
    assert abs(got_macs - paper_gmacs * 1e9) <= 0.03 * paper_gmacs * 1e9  # +-3%
    for position, shape in shapes.items():
        assert seen[position] == shape
    assert len(seen) == (0 if preset == "r2d50" else 5)


def test_blocks_budget_against_closed_forms():
    """The five blocks' parameters, from the closed forms: non-local 2 C^2 + 4.5 C (7,358,464 in all,
    the spec's figure), GTA 2 C^2 + 2 C + (C/4) R + 2 G^2 T^2; and GTA's multiply-adds over the baseline
    from :func:`_closed_form_macs` (17.44 G: Table 1's 50.2 - 32.7 = 17.5)."""
    base = 23_864_558
    cs = [512, 512, 1024, 1024, 1024]
    assert sum(2 * c * c + 4.5 * c for c in cs) == 7_358_464 == 31_223_022 - base
    assert sum(2 * c * c + 2 * c + c // 4 * 8 + 2 * 8**4 for c in cs) == 31_261_934 - base
    extra = 2 * _closed_form_macs(512, 8, 28, 28, 1, 128, 8, 8, 2) + 3 * _closed_form_macs(1024, 8, 14, 14, 1, 256,
                                                                                          8, 8, 2)
    assert extra == 50_138_001_408 - 32_697_446_400


@pytest.mark.parametrize(("preset", "params", "macs", "T", "classes"), [
    # 16 x 16 matrices: +5 x 2 x 64 x (256 - 64) parameters over the 8-frame model
    ("r2d50-gta-16f", 31_261_934 + 5 * 2 * 64 * (256 - 64), 100_643_696_640, 16, 174),
    # Kinetics head (400 classes); the blocks see 4 frames after the x2 time pooling
    ("c2d50-gta", 31_261_934 + 2048 * 226 + 226 - 5 * 2 * 64 * (64 - 16), 28_167_462_912, 4, 400),
])
def test_other_presets(preset, params, macs, T, classes):
    config = PRESETS[preset].model
    got_params, got_macs, seen = _count(config)
    assert (got_params, got_macs) == (params, macs)
    assert config.num_classes == classes
    assert seen["layer2.1"] == (T, *RES3) and seen["layer3.5"] == (T, *RES4)
    with torch.device("meta"):
        model = GTA(config)
    for block in model.temporal_blocks().values():
        assert block.pixel_attention.shape == block.region_attention.shape == (8, 8, T, T)


def test_other_input_sizes():
    # the full model at 256^2 (Kinetics' test size) and 160 x 192 on fake tensors: features at /8 and /16
    for size, res3, res4 in ((256, (32, 32), (16, 16)), (200, (25, 25), (13, 13))):
        _, _, seen = _count(PRESETS["r2d50-gta"].model, size)
        assert seen["layer2.1"][2:] == res3 and seen["layer3.1"][2:] == res4
    torch.manual_seed(6)
    model = GTA(TINY).eval()
    for h, w in ((40, 48), (24, 24), (33, 17)):
        assert model(torch.randn(1, 3, TINY.frames, h, w)).shape == (1, TINY.num_classes)


def test_c2d_time_pooling():
    torch.manual_seed(7)
    config = TINY.replace(time_pool=2)
    model = GTA(config).eval()
    assert [b.frames for b in model.temporal_blocks().values()] == [2, 2]
    x = torch.randn(2 * 4, 5, 3, 3)
    pooled = model.time_pool(x)
    torch.testing.assert_close(pooled, torch.maximum(x[0::2], x[1::2]))
    assert model(torch.randn(2, 3, 4, 32, 32)).shape == (2, 10)


def test_config_validation():
    with pytest.raises(ValueError, match=r"positions .*layer2\.4"):
        GTAConfig(positions=("layer2.1", "layer2.4"))
    with pytest.raises(ValueError, match="duplicates"):
        GTAConfig(positions=("layer2.1", "layer2.1"))
    with pytest.raises(ValueError, match="multiple of time_pool"):
        GTAConfig(frames=7, time_pool=2)
    with pytest.raises(ValueError, match="divisible by groups=3"):
        GTAConfig(groups=3)
    with pytest.raises(ValueError, match=r"GTAConfig\.block"):
        GTAConfig(block="dnl")
    with pytest.raises(ValueError, match=r"GTAConfig\.dropout"):
        GTAConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"video must be \[B, 3, T = 4"):
        GTA(TINY)(torch.randn(1, 3, 5, 32, 32))
    assert GTAConfig(block="nonlocal").inner_reduction == 2 and GTAConfig().inner_reduction == 4
    for preset in (*PRESETS.values(), *TINY_PRESETS.values()):  # JSON round trip (checkpoints store it)
        assert from_dict(GTAConfig, json.loads(json.dumps(to_dict(preset.model)))) == preset.model


# ----------------------------------------------------------------------------- torchvision layout

# torchvision's resnet50 state dict (torchvision/models/resnet.py: ResNet(Bottleneck, [3, 4, 6, 3]),
# stride on conv2, downsample = Sequential(conv1x1, BatchNorm2d) on each stage's first block):
# stage (name, blocks, bottleneck width); a BatchNorm2d has these five entries.
TORCHVISION_RESNET50_STAGES = (("layer1", 3, 64), ("layer2", 4, 128), ("layer3", 6, 256), ("layer4", 3, 512))
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``resnet50().state_dict()``, in its order (320 keys)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        for entry in BN_ENTRIES:
            shapes[f"{name}.{entry}"] = () if entry == "num_batches_tracked" else (c,)

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    cin = 64
    for stage, blocks, width in TORCHVISION_RESNET50_STAGES:
        for i in range(blocks):
            p = f"{stage}.{i}"
            shapes[f"{p}.conv1.weight"] = (width, cin, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (4 * width, width, 1, 1)
            bn(f"{p}.bn3", 4 * width)
            if i == 0:
                shapes[f"{p}.downsample.0.weight"] = (4 * width, cin, 1, 1)
                bn(f"{p}.downsample.1", 4 * width)
            cin = 4 * width
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


def test_resnet50_layout_and_strict_imagenet_loading(tmp_path):
    shapes = torchvision_resnet50_shapes()
    assert len(shapes) == 320
    # torchvision's resnet50 has 25,557,032 parameters (BN running statistics and counters excluded)
    assert sum(math.prod(s) for k, s in shapes.items() if not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked"))) == 25_557_032
    model = GTA(PRESETS["r2d50-gta"].model)
    own = model.backbone.state_dict()
    assert list(own) == [k for k in shapes if not k.startswith("fc.")]
    assert all(tuple(v.shape) == shapes[k] for k, v in own.items())

    torch.manual_seed(8)
    state = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s)) for k, s in shapes.items()}
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(state, path)
    gta_before = {k: v.clone() for k, v in model.blocks.state_dict().items()}
    load_imagenet(model, path)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.fc.weight.shape == (174, 2048)  # the ImageNet fc is dropped
    assert all(torch.equal(v, gta_before[k]) for k, v in model.blocks.state_dict().items())

    # strictness: a renamed key (and the one it replaced) and a wrong shape are named with the file
    bad = dict(state)
    bad["layer3.5.conv2.weights"] = bad.pop("layer3.5.conv2.weight")
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"resnet50-imagenet\.pth is not a checkpoint of this 2-D ResNet.*"
                                         r"missing keys: layer3\.5\.conv2\.weight.*unexpected keys: "
                                         r"layer3\.5\.conv2\.weights"):
        load_imagenet(model, path)
    wrong = {k: v for k, v in state.items()}
    wrong["layer1.0.conv2.weight"] = torch.randn(64, 64, 1, 1)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"shape mismatches: layer1\.0\.conv2\.weight \(64, 64, 1, 1\)"):
        load_resnet(model.backbone, tmp_path / "wrong.pth")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_imagenet(model, tmp_path / "absent.pth")


def _bottleneck_reference(block, x: torch.Tensor) -> torch.Tensor:
    """torchvision's Bottleneck.forward, functionally (eval-mode BN)."""
    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    stride = block.conv2.stride
    out = F.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight)))
    out = F.relu(bn(block.bn2, F.conv2d(out, block.conv2.weight, stride=stride, padding=1)))
    out = bn(block.bn3, F.conv2d(out, block.conv3.weight))
    identity = x if block.downsample is None else bn(block.downsample[1], F.conv2d(x, block.downsample[0].weight,
                                                                                   stride=stride))
    return F.relu(out + identity)


def test_resnet_forward_against_functional_torchvision():
    torch.manual_seed(9)
    net = ResNet2D(TINY.backbone).double().eval()
    _randomise_norms(net)
    x = torch.randn(3, 3, 29, 35, dtype=torch.float64)
    y = F.max_pool2d(F.relu(F.batch_norm(F.conv2d(x, net.conv1.weight, stride=2, padding=3), net.bn1.running_mean,
                                         net.bn1.running_var, net.bn1.weight, net.bn1.bias, False, 0.0, 1e-5)),
                     3, 2, 1)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(net, stage):
            y = _bottleneck_reference(block, y)
    torch.testing.assert_close(net(x), y.mean(dim=(2, 3)), rtol=1e-10, atol=1e-10)
