"""ETAD's encoder gradient sampling end to end (fastlocal.models.backbones.snippets).

THE CHECK: the backbone's gradient from EGS equals a full backprop through every snippet in which
the gradient reaching the non-sampled snippets' features is zeroed; the sampled snippets are read
independently of fastlocal.selective, from which snippets the backbone sees with autograd on. Also:
the released sampling counts, one optimizer step equal to the released two-step schedule, the
feature layout, and the two learning-rate groups with the released "bn" name-filter quirk.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fastlocal.models.backbones import R2Plus1D, R2Plus1DConfig, SnippetEncoder, parameter_groups, sampled_snippets
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")

# Released setting on a tiny network: stem, layer1 and layer2 frozen, BatchNorm in eval mode.
TINY = R2Plus1DConfig(layers=(1, 1, 1, 1), widths=(4, 6, 8, 8), stem_width=3, frozen_stages=2, norm_eval=True)
CLIP = (3, 4, 8, 8)  # 4 frames of 8x8
T = 128  # snippets per video, as ETAD
BATCH = 2


def backbone(seed: int = 0) -> R2Plus1D:
    """Tiny R(2+1)D in float64 with random BN statistics and affine parameters (BN is not the identity)."""
    torch.manual_seed(seed)
    model = R2Plus1D(TINY).to(torch.float64)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


class Head(nn.Module):
    """Stand-in detector on [B, C, T]: a temporal convolution, so each snippet's gradient differs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 5, 3, padding=1, dtype=torch.float64)

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.conv(features).tanh() - target).square().mean()


def tagged_snippets(seed: int = 1) -> torch.Tensor:
    """[B, T, 3, 4, 8, 8] float64; pixel (0, 0, 0, 0) of snippet (b, t) holds 10 + b * T + t, its tag."""
    generator = torch.Generator().manual_seed(seed)
    snippets = torch.randn(BATCH, T, *CLIP, generator=generator, dtype=torch.float64)
    snippets[:, :, 0, 0, 0, 0] = 10 + torch.arange(BATCH * T, dtype=torch.float64).view(BATCH, T)
    return snippets


def record_grad_calls(model: nn.Module) -> list[torch.Tensor]:
    """Tags of the snippets of every backbone call made with autograd on (the re-encoded chunks)."""
    calls: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if torch.is_grad_enabled():
            calls.append(args[0][:, 0, 0, 0, 0].detach().round().long() - 10)

    model.register_forward_pre_hook(hook)
    return calls


def sampled_mask(calls: list[torch.Tensor]) -> torch.Tensor:
    """[B, T] bool: the snippets re-encoded with autograd."""
    mask = torch.zeros(BATCH * T, dtype=torch.bool)
    mask[torch.cat(calls)] = True
    return mask.view(BATCH, T)


def egs_step(ratio: float, seed: int = 0) -> tuple[SnippetEncoder, Head, torch.Tensor, list[torch.Tensor]]:
    """One EGS forward + backward; returns the encoder, the head, the features and the recorded calls."""
    net = backbone()
    calls = record_grad_calls(net)
    encoder = SnippetEncoder(net, ratio, generator=torch.Generator().manual_seed(seed)).train()
    head = Head(net.out_channels)
    features = encoder(tagged_snippets())
    head.loss(features, target()).backward()
    return encoder, head, features, calls


def target() -> torch.Tensor:
    return torch.rand(BATCH, 5, T, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def per_snippet_features(net: nn.Module, snippets: torch.Tensor) -> torch.Tensor:
    """[B, C, T]: the backbone on every snippet at once (full autograd graph)."""
    return net(snippets.flatten(0, 1)).view(BATCH, T, -1).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# Sampling counts
# ---------------------------------------------------------------------------------------------


def test_released_sampling_counts() -> None:
    # spec §1 EGS: int(128 * ratio / 4 + 0.99) chunks of 4
    assert sampled_snippets(128, 0.1) == 16
    assert sampled_snippets(128, 0.3) == 40
    assert sampled_snippets(128, 1.0) == 128
    assert sampled_snippets(128, 0.0) == 0
    assert sampled_snippets(128, 0.01) == 4  # one chunk as soon as the ratio is positive
    assert sampled_snippets(10, 1.0) == 10  # 3 chunks would be 12: capped at T
    with pytest.raises(ValueError, match=r"ratio must be a finite number in \[0.0, 1.0\]"):
        sampled_snippets(128, 1.5)


# ---------------------------------------------------------------------------------------------
# THE CHECK
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "count"), [(0.1, 16), (0.3, 40)])
def test_egs_gradient_equals_full_backprop_restricted_to_sampled_snippets(ratio: float, count: int) -> None:
    reference = backbone()  # same weights, no hook; deep copies made before the hook is registered
    encoder, head, features, calls = egs_step(ratio)
    mask = sampled_mask(calls)
    # chunks of 4 snippets of one video, `count` distinct snippets per video
    assert all(c.numel() == 4 and (c // T).unique().numel() == 1 for c in calls)
    assert mask.sum(1).tolist() == [count] * BATCH
    assert torch.cat(calls).unique().numel() == count * BATCH
    assert not torch.equal(mask[0], mask[1])  # one draw per video

    reference_head = Head(reference.out_channels)
    reference_head.load_state_dict(head.state_dict())
    reference_head.zero_grad()
    head_grads = [p.grad.clone() for p in head.parameters()]
    reference.train()
    full = per_snippet_features(reference, tagged_snippets())
    torch.testing.assert_close(features.detach(), full.detach(), rtol=1e-12, atol=1e-12)
    restricted = full.clone()
    restricted.register_hook(lambda g: g * mask[:, None, :])  # no gradient into the non-sampled snippets
    reference_head.loss(restricted, target()).backward()

    compared = 0
    for (name, p), q in zip(encoder.backbone.named_parameters(), reference.parameters(), strict=True):
        if not p.requires_grad:  # frozen stages: no gradient either way
            assert p.grad is None and q.grad is None, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-14, msg=name)
        compared += 1
    assert compared == len([p for p in reference.parameters() if p.requires_grad]) > 0
    for g, p in zip(head_grads, reference_head.parameters(), strict=True):  # the detector sees every snippet
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-14)

    # control: the restriction matters (full backprop's gradient is far from EGS's)
    unrestricted = backbone()
    reference_head.loss(per_snippet_features(unrestricted.train(), tagged_snippets()), target()).backward()
    weight = "layer4.0.conv1.0.0.weight"
    full_grad = dict(unrestricted.named_parameters())[weight].grad
    egs_grad = dict(encoder.backbone.named_parameters())[weight].grad
    assert (full_grad - egs_grad).norm() > 0.1 * full_grad.norm()


def test_one_step_equals_the_released_two_step_schedule() -> None:
    """One loss.backward() and one AdamW step through EGS == ETAD's trainer: detector step on detached
    features, zero_grad, backbone backward of the sampled snippets with the features' gradient, step."""
    encoder, head, _, calls = egs_step(0.3)
    mask = sampled_mask(calls)
    initial_head = copy.deepcopy(head.state_dict())
    groups = parameter_groups(head, encoder, detector_lr=5e-4, backbone_lr=5e-7, train_norm=True)
    torch.optim.AdamW(groups, weight_decay=1e-4).step()

    net, released_head = backbone(), Head(TINY.widths[-1])
    released_head.load_state_dict(initial_head)
    optimizer = torch.optim.AdamW(parameter_groups(released_head, net, detector_lr=5e-4, backbone_lr=5e-7,
                                                   train_norm=True), weight_decay=1e-4)
    snippets = tagged_snippets()
    net.eval()
    with torch.no_grad():  # stage 1: every snippet, no autograd
        video_feat = per_snippet_features(net, snippets)
    video_feat.requires_grad_(True)
    optimizer.zero_grad()
    released_head.loss(video_feat, target()).backward()  # stage 2: the detector alone
    optimizer.step()
    feat_grad = video_feat.grad.clone()
    optimizer.zero_grad()
    net.train()
    for b in range(BATCH):  # stage 3: the sampled snippets, 4 at a time
        for chunk in mask[b].nonzero().flatten().split(4):
            net(snippets[b, chunk]).backward(feat_grad[b, :, chunk].T)
    optimizer.step()

    for (name, p), q in zip(encoder.backbone.named_parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15, msg=name)
    for p, q in zip(head.parameters(), released_head.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15)
    before = dict(backbone().named_parameters())
    after = dict(encoder.backbone.named_parameters())
    assert not torch.equal(after["layer4.0.conv1.0.0.weight"], before["layer4.0.conv1.0.0.weight"])
    assert not torch.equal(after["layer4.0.conv1.1.weight"], before["layer4.0.conv1.1.weight"])  # BN trained
    assert torch.equal(after["layer2.0.conv1.0.0.weight"], before["layer2.0.conv1.0.0.weight"])  # frozen


# ---------------------------------------------------------------------------------------------
# Features and modes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval", "no_grad", "ratio0"])
def test_features_are_the_backbone_per_snippet(mode: str) -> None:
    net = backbone()
    calls = record_grad_calls(net)
    encoder = SnippetEncoder(net, 0.0 if mode == "ratio0" else 0.1)
    encoder.train(mode != "eval")
    snippets = tagged_snippets()[:, :9]  # 9 snippets: the last chunk holds one
    with torch.set_grad_enabled(mode != "no_grad"):
        features = encoder(snippets)
    assert features.shape == (BATCH, 8, 9)
    expected = backbone()(snippets.flatten(0, 1)).view(BATCH, 9, 8).transpose(1, 2)
    torch.testing.assert_close(features, expected, rtol=1e-12, atol=1e-12)
    assert features.requires_grad is (mode == "train")
    assert calls == []  # nothing ran with autograd yet (EGS re-encodes in backward only)
    if mode == "train":
        features.sum().backward()
        assert [c.numel() for c in calls] == [4, 4]  # one chunk of 4 per video (int(9 * 0.1 / 4 + 0.99) = 1)


def test_sampling_strategy_and_generator() -> None:
    def sampled(strategy: str, seed: int) -> torch.Tensor:
        net = backbone()
        calls = record_grad_calls(net)
        encoder = SnippetEncoder(net, 0.1, strategy=strategy, generator=torch.Generator().manual_seed(seed))
        encoder(tagged_snippets()).sum().backward()
        return sampled_mask(calls)

    assert torch.equal(sampled("random", 3), sampled("random", 3))
    assert not torch.equal(sampled("random", 3), sampled("random", 4))
    for video in sampled("block", 0):  # one contiguous run of 16 snippets per video
        index = video.nonzero().flatten()
        assert index.numel() == 16 and (index.diff() == 1).all()


def test_snippet_encoder_errors() -> None:
    with pytest.raises(TypeError, match=r"backbone must be a torch\.nn\.Module"):
        SnippetEncoder(lambda x: x)
    with pytest.raises(ValueError, match="ratio must be a finite number"):
        SnippetEncoder(backbone(), -0.1)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        SnippetEncoder(backbone(), chunk_size=0)
    with pytest.raises(ValueError, match="strategy must be one of"):
        SnippetEncoder(backbone(), strategy="uniform")
    with pytest.raises(ValueError, match=r"snippets must be \[batch, snippets, 3, frames, height, width\]"):
        SnippetEncoder(backbone())(torch.zeros(BATCH, 3, 4, 8, 8, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Two learning rates
# ---------------------------------------------------------------------------------------------


def test_parameter_groups_and_the_released_bn_quirk() -> None:
    net, head = backbone(), Head(TINY.widths[-1])
    encoder = SnippetEncoder(net)
    names = {id(p): n for n, p in net.named_parameters()}
    norm = {id(m.weight) for m in net.modules() if isinstance(m, nn.BatchNorm3d)} | {
        id(m.bias) for m in net.modules() if isinstance(m, nn.BatchNorm3d)}
    trainable = {id(p) for p in net.parameters() if p.requires_grad}  # layer3 and layer4

    # released: the "bn" filter matches no torchvision name, so BN weights and biases are optimised too
    assert not any("bn" in n for n in names.values())
    released = parameter_groups(head, encoder, detector_lr=5e-4, backbone_lr=5e-7, train_norm=True)
    assert [(g["name"], g["lr"]) for g in released] == [("detector", 5e-4), ("backbone", 5e-7)]
    assert [id(p) for p in released[0]["params"]] == [id(p) for p in head.parameters()]
    assert {id(p) for p in released[1]["params"]} == trainable
    assert trainable & norm

    # default (what the filter meant, the paper's "all BN frozen"): BN affine parameters in no group, frozen
    groups = parameter_groups(head, encoder, detector_lr=1e-3, backbone_lr=1e-6)
    assert {id(p) for p in groups[1]["params"]} == trainable - norm
    assert all(not p.requires_grad for p in net.parameters() if id(p) in norm)
    net(torch.randn(2, *CLIP, dtype=torch.float64)).sum().backward()
    assert all(p.grad is None for p in net.parameters() if id(p) in norm)

    with pytest.raises(ValueError, match="share 2 parameter"):
        parameter_groups(nn.Sequential(head.conv), head, detector_lr=1.0, backbone_lr=1.0)
    with pytest.raises(ValueError, match="backbone_lr must be a finite number"):
        parameter_groups(head, encoder, detector_lr=1.0, backbone_lr=-1.0)


def test_benchmark_methods_compute_the_same_step() -> None:
    """fastlocal.bench.encoder_sampling: every method's first step sees the same features (same loss)."""
    from fastlocal.bench.encoder_sampling import METHODS, EncoderSampling, make_step

    config = EncoderSampling.tiny_configs[0]
    losses = [make_step(method, config, warmup=False)() for method in METHODS]
    for method, loss in zip(METHODS[1:], losses[1:], strict=True):
        torch.testing.assert_close(loss, losses[0], rtol=1e-5, atol=1e-6, msg=method)
