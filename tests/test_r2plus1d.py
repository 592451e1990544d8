"""R(2+1)D backbones (fastlocal.models.backbones.r2plus1d): torchvision's state-dict layout, TSP's
R(2+1)D-34, the forward against a functional re-implementation of torchvision's, strict local
loading, frozen stages and norm_eval."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from fastlocal.models.backbones import R2Plus1D, R2Plus1DConfig, load_r2plus1d, r2plus1d_18, r2plus1d_34

pytestmark = pytest.mark.usefixtures("one_thread")

# torchvision's r2plus1d_18 state dict, written from torchvision/models/video/resnet.py (VideoResNet with
# R2Plus1dStem, BasicBlock and Conv2Plus1D; midplanes = in*out*27 // (in*9 + 3*out) of the block):
# (module, conv weight shape) for a convolution, (module, width) for a BatchNorm3d (weight, bias,
# running_mean, running_var, num_batches_tracked), (module, (out, in)) for the Linear classifier.
TORCHVISION_R2PLUS1D_18 = [
    ("stem.0", (45, 3, 1, 7, 7)), ("stem.1", 45), ("stem.3", (64, 45, 3, 1, 1)), ("stem.4", 64),
    # layer1: 64 -> 64, midplanes 144
    ("layer1.0.conv1.0.0", (144, 64, 1, 3, 3)), ("layer1.0.conv1.0.1", 144), ("layer1.0.conv1.0.3", (64, 144, 3, 1, 1)),
    ("layer1.0.conv1.1", 64),
    ("layer1.0.conv2.0.0", (144, 64, 1, 3, 3)), ("layer1.0.conv2.0.1", 144), ("layer1.0.conv2.0.3", (64, 144, 3, 1, 1)),
    ("layer1.0.conv2.1", 64),
    ("layer1.1.conv1.0.0", (144, 64, 1, 3, 3)), ("layer1.1.conv1.0.1", 144), ("layer1.1.conv1.0.3", (64, 144, 3, 1, 1)),
    ("layer1.1.conv1.1", 64),
    ("layer1.1.conv2.0.0", (144, 64, 1, 3, 3)), ("layer1.1.conv2.0.1", 144), ("layer1.1.conv2.0.3", (64, 144, 3, 1, 1)),
    ("layer1.1.conv2.1", 64),
    # layer2: 64 -> 128 (midplanes 230 in block 0, both convolutions), then 128 -> 128 (288)
    ("layer2.0.conv1.0.0", (230, 64, 1, 3, 3)), ("layer2.0.conv1.0.1", 230),
    ("layer2.0.conv1.0.3", (128, 230, 3, 1, 1)), ("layer2.0.conv1.1", 128),
    ("layer2.0.conv2.0.0", (230, 128, 1, 3, 3)), ("layer2.0.conv2.0.1", 230),
    ("layer2.0.conv2.0.3", (128, 230, 3, 1, 1)), ("layer2.0.conv2.1", 128),
    ("layer2.0.downsample.0", (128, 64, 1, 1, 1)), ("layer2.0.downsample.1", 128),
    ("layer2.1.conv1.0.0", (288, 128, 1, 3, 3)), ("layer2.1.conv1.0.1", 288),
    ("layer2.1.conv1.0.3", (128, 288, 3, 1, 1)), ("layer2.1.conv1.1", 128),
    ("layer2.1.conv2.0.0", (288, 128, 1, 3, 3)), ("layer2.1.conv2.0.1", 288),
    ("layer2.1.conv2.0.3", (128, 288, 3, 1, 1)), ("layer2.1.conv2.1", 128),
    # layer3: 128 -> 256 (460), then 256 -> 256 (576)
    ("layer3.0.conv1.0.0", (460, 128, 1, 3, 3)), ("layer3.0.conv1.0.1", 460),
    ("layer3.0.conv1.0.3", (256, 460, 3, 1, 1)), ("layer3.0.conv1.1", 256),
    ("layer3.0.conv2.0.0", (460, 256, 1, 3, 3)), ("layer3.0.conv2.0.1", 460),
    ("layer3.0.conv2.0.3", (256, 460, 3, 1, 1)), ("layer3.0.conv2.1", 256),
    ("layer3.0.downsample.0", (256, 128, 1, 1, 1)), ("layer3.0.downsample.1", 256),
    ("layer3.1.conv1.0.0", (576, 256, 1, 3, 3)), ("layer3.1.conv1.0.1", 576),
    ("layer3.1.conv1.0.3", (256, 576, 3, 1, 1)), ("layer3.1.conv1.1", 256),
    ("layer3.1.conv2.0.0", (576, 256, 1, 3, 3)), ("layer3.1.conv2.0.1", 576),
    ("layer3.1.conv2.0.3", (256, 576, 3, 1, 1)), ("layer3.1.conv2.1", 256),
    # layer4: 256 -> 512 (921), then 512 -> 512 (1152)
    ("layer4.0.conv1.0.0", (921, 256, 1, 3, 3)), ("layer4.0.conv1.0.1", 921),
    ("layer4.0.conv1.0.3", (512, 921, 3, 1, 1)), ("layer4.0.conv1.1", 512),
    ("layer4.0.conv2.0.0", (921, 512, 1, 3, 3)), ("layer4.0.conv2.0.1", 921),
    ("layer4.0.conv2.0.3", (512, 921, 3, 1, 1)), ("layer4.0.conv2.1", 512),
    ("layer4.0.downsample.0", (512, 256, 1, 1, 1)), ("layer4.0.downsample.1", 512),
    ("layer4.1.conv1.0.0", (1152, 512, 1, 3, 3)), ("layer4.1.conv1.0.1", 1152),
    ("layer4.1.conv1.0.3", (512, 1152, 3, 1, 1)), ("layer4.1.conv1.1", 512),
    ("layer4.1.conv2.0.0", (1152, 512, 1, 3, 3)), ("layer4.1.conv2.0.1", 1152),
    ("layer4.1.conv2.0.3", (512, 1152, 3, 1, 1)), ("layer4.1.conv2.1", 512),
    ("fc", (400, 512)),
]
TORCHVISION_R2PLUS1D_18_PARAMETERS = 31_505_325  # R2Plus1D_18_Weights.KINETICS400_V1.meta["num_params"]
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

TINY = R2Plus1DConfig(layers=(1, 2, 1, 1), widths=(4, 6, 8, 8), stem_width=3)


def expand(table: list[tuple[str, object]]) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of a table of modules."""
    shapes: dict[str, tuple[int, ...]] = {}
    for module, shape in table:
        if isinstance(shape, int):  # BatchNorm3d
            shapes.update({f"{module}.weight": (shape,), f"{module}.bias": (shape,),
                           f"{module}.running_mean": (shape,), f"{module}.running_var": (shape,),
                           f"{module}.num_batches_tracked": ()})
        elif module == "fc":
            shapes.update({"fc.weight": shape, "fc.bias": shape[:1]})
        else:
            shapes[f"{module}.weight"] = shape
    return shapes


def shapes_of(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def randomised(config: R2Plus1DConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> R2Plus1D:
    """A model with random weights, BN affine parameters and running statistics (BN is not the identity)."""
    torch.manual_seed(seed)
    model = R2Plus1D(config).to(dtype)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


def functional_forward(state: dict[str, torch.Tensor], layers: tuple[int, ...], eps: float,
                       x: torch.Tensor) -> torch.Tensor:
    """torchvision's VideoResNet forward (R2Plus1dStem, BasicBlock, Conv2Plus1D), BN in eval mode, average-pooled."""

    def bn(x: torch.Tensor, m: str) -> torch.Tensor:
        return F.batch_norm(x, state[f"{m}.running_mean"], state[f"{m}.running_var"], state[f"{m}.weight"],
                            state[f"{m}.bias"], False, 0.0, eps)

    def conv2plus1d(x: torch.Tensor, m: str, stride: int) -> torch.Tensor:
        x = F.relu(bn(F.conv3d(x, state[f"{m}.0.weight"], stride=(1, stride, stride), padding=(0, 1, 1)), f"{m}.1"))
        return F.conv3d(x, state[f"{m}.3.weight"], stride=(stride, 1, 1), padding=(1, 0, 0))

    x = F.relu(bn(F.conv3d(x, state["stem.0.weight"], stride=(1, 2, 2), padding=(0, 3, 3)), "stem.1"))
    x = F.relu(bn(F.conv3d(x, state["stem.3.weight"], padding=(1, 0, 0)), "stem.4"))
    for stage, blocks in enumerate(layers, start=1):
        for block in range(blocks):
            m, stride = f"layer{stage}.{block}", 2 if stage > 1 and block == 0 else 1
            out = F.relu(bn(conv2plus1d(x, f"{m}.conv1.0", stride), f"{m}.conv1.1"))
            out = bn(conv2plus1d(out, f"{m}.conv2.0", 1), f"{m}.conv2.1")
            if f"{m}.downsample.0.weight" in state:
                x = bn(F.conv3d(x, state[f"{m}.downsample.0.weight"], stride=stride), f"{m}.downsample.1")
            x = F.relu(out + x)
    return x.mean(dim=(2, 3, 4))


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def test_r2plus1d_18_state_dict_is_torchvisions() -> None:
    expected = expand(TORCHVISION_R2PLUS1D_18)
    parameters = sum(torch.Size(s).numel() for k, s in expected.items() if not k.endswith(BN_BUFFERS))
    assert parameters == TORCHVISION_R2PLUS1D_18_PARAMETERS  # the table itself is torchvision's network
    with torch.device("meta"):
        model = r2plus1d_18()
    head = {k: v for k, v in expected.items() if k.startswith("fc.")}
    assert shapes_of(model) == {k: v for k, v in expected.items() if k not in head}
    assert sum(p.numel() for p in model.parameters()) == 31_300_125 == parameters - 400 * 512 - 400
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_r2plus1d_34_is_tsps() -> None:
    """TSP's backbone.py: VideoResNet with layers [3, 4, 6, 3], a Conv2Plus1D whose midplanes come from
    its own (in, out) widths, and BatchNorm eps 1e-3, momentum 0.9."""
    with torch.device("meta"):
        model = r2plus1d_34()
    shapes = shapes_of(model)
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        assert f"layer{stage}.{blocks - 1}.conv2.1.weight" in shapes
        assert f"layer{stage}.{blocks}.conv1.1.weight" not in shapes
    # first block of a stage: conv1 (in -> out) as torchvision, conv2 (out -> out) from its own widths
    assert shapes["layer2.0.conv1.0.0.weight"] == (230, 64, 1, 3, 3)
    assert shapes["layer2.0.conv2.0.0.weight"] == (288, 128, 1, 3, 3)
    assert shapes["layer3.0.conv2.0.3.weight"] == (256, 576, 3, 1, 1)
    assert shapes["layer4.0.conv2.0.1.weight"] == (1152,)
    assert shapes["layer4.2.conv1.0.0.weight"] == (1152, 512, 1, 3, 3)
    assert set(shapes) == {k for k in shapes if not k.startswith("fc")}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.9 for m in norms)


def test_forward_matches_torchvision_functional() -> None:
    model = randomised(TINY).eval()
    clips = torch.randn(3, 3, 4, 16, 16, dtype=torch.float64)
    features = model(clips)
    assert features.shape == (3, 8)
    expected = functional_forward(model.state_dict(), TINY.layers, TINY.bn_eps, clips)
    torch.testing.assert_close(features, expected, rtol=1e-12, atol=1e-12)


def test_forward_rejects_bad_clips() -> None:
    model = R2Plus1D(TINY)
    with pytest.raises(ValueError, match=r"clips must be \[n, 3, frames, height, width\]"):
        model(torch.randn(2, 4, 4, 16, 16))
    with pytest.raises(TypeError, match="clips must be floating point"):
        model(torch.zeros(2, 3, 4, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize(("change", "message"), [
    ({"layers": (2, 2, 2)}, "layers must be a tuple of 4 ints"),
    ({"widths": (64, 0, 256, 512)}, "widths must hold ints >= 1"),
    ({"midplanes": "paper"}, "midplanes must be one of"),
    ({"bn_eps": 0.0}, "bn_eps must be a float"),
    ({"frozen_stages": 5}, r"frozen_stages must be an int in \[-1, 4\]"),
    ({"norm_eval": 1}, "norm_eval must be a bool"),
])
def test_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        R2Plus1DConfig(**change)


# ---------------------------------------------------------------------------------------------
# Loading local checkpoints
# ---------------------------------------------------------------------------------------------


def test_loads_a_torchvision_checkpoint(tmp_path) -> None:
    """A file with every key of torchvision's r2plus1d_18 (classifier included) loads strictly."""
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=generator))
             for k, s in expand(TORCHVISION_R2PLUS1D_18).items()}
    path = tmp_path / "r2plus1d_18.pth"
    torch.save(state, path)
    with torch.device("meta"):
        model = r2plus1d_18()
    model.to_empty(device="cpu")
    load_r2plus1d(model, path)
    loaded = model.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_loads_a_tsp_checkpoint_under_a_prefix(tmp_path) -> None:
    """TSP's checkpoints: {"model": {"features.<backbone key>": ..., "fc1.weight": ...}}, some files
    without num_batches_tracked."""
    source = randomised(TINY, seed=1)
    backbone = {f"features.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "tsp.pth"
    torch.save({"model": {**backbone, "fc1.weight": torch.zeros(2, 8), "fc1.bias": torch.zeros(2)}}, path)
    model = R2Plus1D(TINY).to(torch.float64)
    load_r2plus1d(model, path, prefix="features.")
    clips = torch.randn(2, 3, 4, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model.eval()(clips), source.eval()(clips), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"tsp.pth: no key starts with prefix 'backbone\.'"):
        load_r2plus1d(model, path, prefix="backbone.")


def _drop(state: dict) -> None:
    del state["layer2.0.conv1.0.0.weight"]


def _add(state: dict) -> None:
    state["layer5.0.weight"] = torch.zeros(1)


def _reshape(state: dict) -> None:
    state["stem.0.weight"] = torch.zeros(5, 3, 1, 7, 7)


@pytest.mark.parametrize(("edit", "message"), [
    (_drop, r"missing keys: layer2\.0\.conv1\.0\.0\.weight$"),
    (_add, r"unexpected keys: layer5\.0\.weight$"),
    (_reshape, r"shape mismatches: stem\.0\.weight \(5, 3, 1, 7, 7\) \(model: \(3, 3, 1, 7, 7\)\)$"),
])
def test_load_errors_name_the_file_and_keys(tmp_path, edit, message: str) -> None:
    state = R2Plus1D(TINY).state_dict()
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"bad\.pth is not a checkpoint of this R\(2\+1\)D.*" + message):
        load_r2plus1d(R2Plus1D(TINY), path)


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_r2plus1d(R2Plus1D(TINY), tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------------
# Frozen stages and norm_eval
# ---------------------------------------------------------------------------------------------


def test_frozen_stages_get_no_gradient() -> None:
    model = randomised(R2Plus1DConfig(**{**TINY.__dict__, "frozen_stages": 2}))
    model.train()
    model(torch.randn(2, 3, 4, 16, 16, dtype=torch.float64)).square().sum().backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("stem.", "layer1.", "layer2."))
        assert p.requires_grad is not frozen, name
        if frozen:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # frozen stages stay in eval mode in train(), the others train (norm_eval is off)
    modes = {name: m.training for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm3d)}
    assert all(not t for n, t in modes.items() if n.startswith(("stem.", "layer1.", "layer2.")))
    assert all(t for n, t in modes.items() if n.startswith(("layer3.", "layer4.")))


@pytest.mark.parametrize("norm_eval", [True, False])
def test_norm_eval_keeps_running_statistics(norm_eval: bool) -> None:
    model = randomised(R2Plus1DConfig(**{**TINY.__dict__, "norm_eval": norm_eval}))
    before = copy.deepcopy(model.state_dict())
    model.train()
    assert model.training
    clips = torch.randn(2, 3, 4, 16, 16, dtype=torch.float64)
    out = model(clips)
    out.sum().backward()
    stats = [k for k in before if k.endswith(BN_BUFFERS)]
    changed = [k for k in stats if not torch.equal(before[k], model.state_dict()[k])]
    if norm_eval:
        assert changed == []
        assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
        # BN normalised with the running statistics: the training-mode output is the eval-mode network's
        torch.testing.assert_close(out, functional_forward(before, TINY.layers, TINY.bn_eps, clips),
                                   rtol=1e-12, atol=1e-12)
    else:
        assert len(changed) == len(stats)  # control: without norm_eval every statistic moves
