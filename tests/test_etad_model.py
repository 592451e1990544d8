"""ETAD's detector (fastlocal.models.etad): parameter counts, proposal sampling counts, RoI
pooling against a loop transcription of torchvision's roi_align, backend agreement, gradient
flow, losses on hand-computed cases, regression round trip, post-processing on known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fastlocal.models.etad import (
    ETAD,
    LOSS_WEIGHTS,
    PRESETS,
    ETADConfig,
    average_stages,
    boundary_mask,
    boundary_targets,
    candidate_anchors,
    detections,
    etad_loss,
    grid_index,
    make_targets,
    match_ground_truth,
    num_candidates,
    pool_proposals,
    postprocess_video,
    read_classifier_scores,
    reg_to_anchors,
    regression_targets,
    sample_proposals,
    select_proposals,
    soft_nms_proposals,
    stage_loss,
    top_classes,
)
from fastlocal.models.etad.losses import (
    ETADTargets,
    balanced_bce,
    masked_smooth_l1,
    sampled_bce,
    sampled_l2,
)
from fastlocal.models.etad.model import ETADOutput
from fastlocal.models.etad.proposals import block_index

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = PRESETS["small"].model


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_batch(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, SMALL.in_channels, SMALL.tscale, generator=g)
    anchors = torch.stack([sample_proposals(SMALL.tscale, SMALL.proposal_ratio, generator=g) for _ in range(batch)])
    return x, anchors


# ---- configs and parameter counts ----------------------------------------------------------------


@pytest.mark.parametrize(("preset", "expected"), [("anet-tsp", 10_343_450), ("anet-tsn", 10_321_946),
                                                  ("anet-tsm", 10_638_362), ("thumos-tsn", 10_638_362),
                                                  ("thumos-i3d", 10_638_362)])
def test_parameter_counts(preset, expected):
    with torch.device("meta"):
        model = ETAD(PRESETS[preset].model)
    assert n_params(model) == expected


def test_parameter_breakdown_tsp():
    with torch.device("meta"):
        model = ETAD(PRESETS["anet-tsp"].model)
    assert n_params(model.aggregation) == 1_284_096
    assert n_params(model.tem) == 49_922
    assert [n_params(m) for m in model.stage_conv] == [49_408] * 3
    assert [n_params(m) for m in model.stage_pem] == [2_953_736] * 3


def test_presets_and_switches():
    tsp, train = PRESETS["anet-tsp"].model, PRESETS["anet-tsp"].train
    assert (tsp.tscale, tsp.roi_size, tsp.extend_ratio, tsp.stages, tsp.proposal_ratio, tsp.nms_sigma,
            tsp.max_proposals, tsp.class_topk) == (128, 24, 0.5, (0.7, 0.8, 0.9), 0.06, 0.35, 100, 2)
    assert (train.optimizer, train.lr, train.weight_decay, train.batch_size, train.epochs, train.milestones,
            train.gamma) == ("adamw", 1e-3, 1e-4, 16, 6, (5,), 0.1)
    assert tsp.weights == {"tem": 1.0, "iou_cls": 1.0, "iou_reg": 5.0, "boundary_reg": 10.0, "boundary_cls": 0.5}
    assert tsp.replace(loss_weights="paper").weights == LOSS_WEIGHTS["paper"]
    assert LOSS_WEIGHTS["paper"]["iou_reg"] == 1.0 and LOSS_WEIGHTS["paper"]["boundary_cls"] == 1.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"in_channels": 402}, "in_channels=402 must be divisible by conv_groups"),
    ({"hidden_dim": 48}, "hidden_dim=48 must be divisible by 32"),
    ({"roi_size": 10}, "roi_size must be divisible by 4"),
    ({"stages": ()}, "stages must name at least one"),
    ({"stages": (0.7, 1.2)}, r"stages\[1\]"),
    ({"proposal_ratio": 0.0}, "proposal_ratio must be in"),
    ({"max_duration": 200}, "max_duration must be <= tscale"),
    ({"proposal_sampling": "fps"}, "proposal_sampling must be one of"),
    ({"loss_weights": "mine"}, "loss_weights must be one of"),
    ({"iou_low": 0.8}, "iou_low=0.8 must be below iou_high"),
    ({"nms_sigma": 0}, "nms_sigma must be"),
])
def test_config_rejects(changes, message):
    with pytest.raises(ValueError, match=message):
        ETADConfig(**changes)


def test_forward_rejects_bad_shapes():
    model = ETAD(SMALL)
    x, anchors = small_batch()
    with pytest.raises(ValueError, match=r"x must have shape \[B, 32, 32\]"):
        model(x[:, :, :16], anchors)
    with pytest.raises(ValueError, match=r"anchors must have shape \[B=2, K, 2\]"):
        model(x, anchors[:1])


# ---- proposals ----------------------------------------------------------------------------------


def test_candidates_and_sampling_counts():
    anchors = candidate_anchors(128)
    assert num_candidates(128) == anchors.shape[0] == 8256
    # row-major over (duration d, start j): [j / T, (j + d + 1) / T]
    assert torch.equal(anchors[0], torch.tensor([0.0, 1 / 128]))
    assert torch.equal(anchors[128], torch.tensor([0.0, 2 / 128]))
    assert torch.equal(anchors[-1], torch.tensor([0.0, 1.0]))
    assert (anchors[:, 1] <= 1).all() and (anchors[:, 1] > anchors[:, 0]).all()
    g = torch.Generator().manual_seed(0)
    keys = {tuple(a) for a in (anchors * 128).round().long().tolist()}
    for strategy, count in (("random", 495), ("grid", 496), ("block", 484)):
        sample = sample_proposals(128, 0.06, strategy, generator=g)
        picked = {tuple(a) for a in (sample * 128).round().long().tolist()}
        assert sample.shape == (count, 2) and len(picked) == count and picked <= keys
    # the grid: durations and starts at round(1 + m * sqrt(1 / 0.06)) (NumPy rounding), j + d < T
    index = grid_index(128, 0.06)
    lengths = ((anchors[index, 1] - anchors[index, 0]) * 128).round().long() - 1
    starts = (anchors[index, 0] * 128).round().long()
    steps = {int(v) for v in np.round(1 + np.arange(32) * math.sqrt(1 / 0.06))}
    assert set(lengths.tolist()) <= steps and set(starts.tolist()) <= steps
    assert sum(1 for d in steps for j in steps if d + j < 128) == 496
    # a block is w x w adjacent (duration, start) pairs, w = floor(sqrt(495)) = 22
    block = anchors[block_index(128, 0.06, generator=g)]
    d = ((block[:, 1] - block[:, 0]) * 128).round().long() - 1
    j = (block[:, 0] * 128).round().long()
    assert d.max() - d.min() == 21 and j.max() - j.min() == 21


def test_max_duration_limits_candidates():
    anchors = candidate_anchors(16, 4)
    assert anchors.shape[0] == num_candidates(16, 4) == 16 + 15 + 14 + 13
    assert ((anchors[:, 1] - anchors[:, 0]) * 16).round().max() == 4


def test_match_ground_truth_argmax_iou():
    anchors = torch.tensor([[0.0, 0.2], [0.25, 0.6], [0.5, 1.0], [0.9, 1.0]])
    gt = torch.tensor([[0.0, 0.3], [0.3, 0.6], [0.55, 0.95]])
    expected = torch.tensor([[0.0, 0.3], [0.3, 0.6], [0.55, 0.95], [0.55, 0.95]])
    assert torch.equal(match_ground_truth(anchors, gt), expected)
    assert torch.equal(match_ground_truth(anchors, gt[:0]), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="start <= end"):
        match_ground_truth(anchors, gt.flip(1))


def test_regression_round_trip():
    g = torch.Generator().manual_seed(1)
    start = torch.rand(64, generator=g, dtype=torch.float64) * 0.8
    anchors = torch.stack((start, start + 0.02 + 0.18 * torch.rand(64, generator=g, dtype=torch.float64)), 1)
    gstart = torch.rand(64, generator=g, dtype=torch.float64) * 0.8
    gt = torch.stack((gstart, gstart + 0.01 + 0.19 * torch.rand(64, generator=g, dtype=torch.float64)), 1)
    deltas = regression_targets(anchors, gt)
    assert torch.allclose(deltas[:, 2], (deltas[:, 0] + deltas[:, 1]) / 2)
    reg = torch.cat((deltas, torch.zeros(64, 2, dtype=torch.float64)), 1)  # p_s, p_e columns are ignored
    # box 1 is exact; box 2's width carries the 1e-6 inside the log: L_a * 1e-6 / 2 on each end
    assert torch.allclose(reg_to_anchors(anchors, reg), gt, atol=1e-7, rtol=0)
    assert torch.allclose(reg_to_anchors(anchors, torch.zeros(64, 6, dtype=torch.float64)), anchors)
    # a hand case: anchor [0.2, 0.6], ds = 0.25, de = -0.5 -> box 1 [0.3, 0.4]; dc = 0.5, dw = log 2 -> box 2 [0.2, 1.0]
    one = reg_to_anchors(torch.tensor([[0.2, 0.6]]), torch.tensor([[0.25, -0.5, 0.5, math.log(2.0), 0.0, 0.0]]))
    assert torch.allclose(one, torch.tensor([[0.25, 0.7]]))


# ---- RoI pooling ----------------------------------------------------------------------------------


def torchvision_roi_align_loop(x4: torch.Tensor, boxes: torch.Tensor, pooled_h: int, pooled_w: int) -> torch.Tensor:
    """torchvision.ops.roi_align(x4 [B, C, H, W], boxes [N, 5] (b, x1, y1, x2, y2), (pooled_h, pooled_w),
    spatial_scale=1, sampling_ratio=-1 (adaptive), aligned=False), transcribed bin by bin and sample by sample."""
    _, _, height, width = x4.shape

    def bilinear(b: int, y: float, xx: float) -> torch.Tensor:
        if y < -1.0 or y > height or xx < -1.0 or xx > width:
            return x4.new_zeros(x4.shape[1])
        y, xx = max(y, 0.0), max(xx, 0.0)
        y_low, x_low = int(y), int(xx)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            xx = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, xx - x_low
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * x4[b, :, y_low, x_low] + hy * lx * x4[b, :, y_low, x_high]
                + ly * hx * x4[b, :, y_high, x_low] + ly * lx * x4[b, :, y_high, x_high])

    out = []
    for b, x1, y1, x2, y2 in boxes.tolist():
        roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h, grid_w = math.ceil(roi_h / pooled_h), math.ceil(roi_w / pooled_w)
        bins = []
        for ph in range(pooled_h):
            row = []
            for pw in range(pooled_w):
                total = x4.new_zeros(x4.shape[1])
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        total = total + bilinear(int(b), y, x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w)
                row.append(total / max(grid_h * grid_w, 1))
            bins.append(torch.stack(row, -1))
        out.append(torch.stack(bins, -2))
    return torch.stack(out)  # [N, C, pooled_h, pooled_w]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_pool_proposals_is_torchvision_roi_align(backend):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, dtype=torch.float64, generator=g, requires_grad=True)
    # proposals near both edges (extended beyond [0, 1]), long and very short ones
    anchors = torch.tensor([[[0.0, 0.25], [0.8, 1.0], [0.3, 0.33]], [[0.0, 1.0], [0.5, 0.52], [0.1, 0.6]]],
                           dtype=torch.float64)
    out = pool_proposals(x, anchors, 8, 0.5, backend=backend)
    s, e = anchors[..., 0] * 16, anchors[..., 1] * 16
    length = e - s
    b = torch.arange(2, dtype=torch.float64).view(2, 1).expand(2, 3)
    # the released PEM's boxes on [B, C, T, 1]: (b, 0, s - L/2, 1, e + L/2)
    boxes = torch.stack((b, torch.zeros_like(s), s - 0.5 * length, torch.ones_like(s), e + 0.5 * length), -1)
    expected = torchvision_roi_align_loop(x[..., None], boxes.reshape(-1, 5), 8, 1).squeeze(-1)
    assert out.shape == (6, 3, 8)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    weight = torch.randn(out.shape, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


# ---- the detector ---------------------------------------------------------------------------------


def test_backends_agree():
    torch.manual_seed(0)
    model = ETAD(SMALL, backend="cpu")
    x, anchors = small_batch()
    gt = [torch.tensor([[0.1, 0.4], [0.5, 0.9]]), torch.tensor([[0.2, 0.3]])]
    targets = make_targets(gt, anchors, SMALL.tscale)
    results = {}
    for backend in ("cpu", "reference"):
        model.backend = backend
        model.zero_grad()
        output = model(x, anchors)
        loss, _ = etad_loss(output, targets, SMALL, generator=torch.Generator().manual_seed(3))
        loss.backward()
        results[backend] = (output, loss, {n: p.grad.clone() for n, p in model.named_parameters()})
    (out_c, loss_c, grad_c), (out_r, loss_r, grad_r) = results["cpu"], results["reference"]
    for a, b in zip(out_c, out_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_c, loss_r, rtol=1e-5, atol=1e-6)
    for name in grad_c:
        torch.testing.assert_close(grad_c[name], grad_r[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_flow_and_cascade():
    torch.manual_seed(0)
    model = ETAD(SMALL)
    x, anchors = small_batch(seed=1)
    output = model(x, anchors)
    assert output.tem.shape == (2, 2, 32) and output.iou.shape == (3, 2, 105, 2) and output.reg.shape == (3, 2, 105, 6)
    assert ((output.tem > 0) & (output.tem < 1)).all() and ((output.iou > 0) & (output.iou < 1)).all()
    assert ((output.reg[..., 4:] > 0) & (output.reg[..., 4:] < 1)).all()
    # stage 0 evaluates the input proposals, stage i + 1 those refined by stage i (no gradient through them)
    assert torch.equal(output.anchors[0], anchors)
    for i in range(2):
        assert torch.allclose(output.anchors[i + 1], reg_to_anchors(output.anchors[i], output.reg[i]))
    assert not output.anchors.requires_grad
    g = torch.Generator().manual_seed(4)
    total = sum((t * torch.randn(t.shape, generator=g)).sum() for t in (output.tem, output.iou, output.reg))
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_xavier_init():
    model = ETAD(SMALL)
    fc = model.stage_pem[0].reduce_roi[0]
    bound = math.sqrt(6.0 / (fc.in_features + fc.out_features))
    assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.9 * bound
    assert all(m.bias is None or not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_average_stages_is_released_inference():
    model = ETAD(SMALL).eval()
    x, _ = small_batch(batch=1)
    with torch.no_grad():
        output = model(x, candidate_anchors(SMALL.tscale)[None])
    anchors, iou = average_stages(output)
    refined = [reg_to_anchors(output.anchors[i], output.reg[i]) for i in range(3)]
    assert torch.allclose(anchors, (refined[0] + refined[1] + refined[2]) / 3)
    assert torch.allclose(iou, output.iou.mean(0)) and anchors.shape == (1, 528, 2)


# ---- losses ---------------------------------------------------------------------------------------


def test_boundary_targets_by_ioa():
    start, end = boundary_targets(torch.tensor([[0.2, 0.55]], dtype=torch.float64), 10)
    full, half = 0.1 / (0.1 + 1e-6), 0.05 / (0.1 + 1e-6)
    # start window [0.05, 0.35]: snippets 0 and 3 half covered, 1 and 2 fully
    assert torch.allclose(start, torch.tensor([half, full, full, half, 0, 0, 0, 0, 0, 0]))
    # end window [0.4, 0.7]: snippets 4, 5, 6
    assert torch.allclose(end, torch.tensor([0, 0, 0, 0, full, full, full, 0, 0, 0]))
    assert torch.equal(boundary_targets(torch.zeros(0, 2), 4)[0], torch.zeros(4))


def test_make_targets_clips_segments():
    anchors = torch.tensor([[[0.0, 0.25], [0.75, 1.0]]])
    targets = make_targets([torch.tensor([[-0.2, 0.25], [0.75, 1.3]])], anchors, 4)
    assert torch.equal(targets.matched, anchors)
    assert targets.start.shape == targets.end.shape == (1, 4)
    assert targets.start[0, 0] > 0.6 and targets.end[0, 3] > 0.6


def test_balanced_bce_by_hand():
    pred = torch.tensor([0.8, 0.3, 0.6, 0.1])
    target = torch.tensor([0.9, 0.0, 0.5, 0.2])  # one positive (> 0.5), three negatives
    eps = 1e-6
    expected = -(2.0 * math.log(0.8 + eps) + (2.0 / 3.0) * (math.log(0.7 + eps) + math.log(0.4 + eps)
                                                           + math.log(0.9 + eps))) / 4
    assert balanced_bce(pred, target).item() == pytest.approx(expected, rel=1e-6)
    only_neg = -(math.log(0.2 + eps) + math.log(0.7 + eps) + math.log(0.4 + eps) + math.log(0.9 + eps)) / 4
    assert balanced_bce(pred, torch.zeros(4)).item() == pytest.approx(only_neg, rel=1e-6)


def test_sampled_bce_by_hand():
    eps = 1e-6
    pred = torch.tensor([0.9, 0.7, 0.2])
    # two positives, one negative: the negative is kept with probability 2 -> always
    expected = -(math.log(0.9 + eps) + math.log(0.7 + eps) + math.log(0.8 + eps)) / 3
    assert sampled_bce(pred, torch.tensor([0.95, 0.92, 0.3]), 0.9).item() == pytest.approx(expected, rel=1e-6)
    # no positive: mean of log(1 - p) over all
    expected = -(math.log(0.1 + eps) + math.log(0.3 + eps) + math.log(0.8 + eps)) / 3
    assert sampled_bce(pred, torch.zeros(3), 0.9).item() == pytest.approx(expected, rel=1e-6)
    # one positive among 1000: each negative kept with probability 1 / 999
    target = torch.zeros(1000)
    target[0] = 1.0
    p = torch.full((1000,), 0.5)
    p[0] = 0.25
    noise = torch.rand(1000, generator=torch.Generator().manual_seed(5))
    kept = int(((noise > 1 - 1 / 999) & (target == 0)).sum())
    expected = -(math.log(0.25 + eps) + kept * math.log(0.5 + eps)) / (1 + kept)
    value = sampled_bce(p, target, 0.9, torch.Generator().manual_seed(5)).item()
    assert value == pytest.approx(expected, rel=1e-6)


def test_sampled_l2_and_smooth_l1_by_hand():
    pred = torch.tensor([0.5, 0.9, 0.2, 0.4])
    iou = torch.tensor([0.8, 0.75, 0.5, 0.1])  # two high, one middle, one low: every set kept
    expected = ((0.5 - 0.8) ** 2 + (0.9 - 0.75) ** 2 + (0.2 - 0.5) ** 2 + (0.4 - 0.1) ** 2) / 4
    assert sampled_l2(pred, iou, 0.7, 0.3).item() == pytest.approx(expected, rel=1e-6)
    no_high = torch.tensor([0.6, 0.5, 0.5, 0.1])
    expected = ((0.5 - 0.6) ** 2 + (0.9 - 0.5) ** 2 + (0.2 - 0.5) ** 2 + (0.4 - 0.1) ** 2) / 4
    assert sampled_l2(pred, no_high, 0.7, 0.3).item() == pytest.approx(expected, rel=1e-6)
    # smooth-L1 (beta 1) over iou > 0.7 only: |0.5 - 0| -> 0.125, |0.9 - 3| -> 1.6
    target = torch.tensor([0.0, 3.0, 9.0, 9.0])
    assert masked_smooth_l1(pred, target, iou, 0.7).item() == pytest.approx((0.125 + 1.6) / 2, rel=1e-6)
    assert masked_smooth_l1(pred, target, iou, 0.9).item() == 0.0


def test_stage_loss_terms_by_hand():
    anchors = torch.tensor([[[0.1, 0.5], [0.2, 0.6]]])  # [S=1, B=1, K=2, 2] below
    matched = torch.tensor([[[0.1, 0.5], [0.1, 0.5]]])  # IoU 1 and 0.3 / 0.5 = 0.6
    iou = torch.tensor([[[0.95, 0.8], [0.3, 0.5]]])
    reg = torch.tensor([[[0.5, -0.2, 0.0, 2.0, 0.7, 0.6], [1.0, 1.0, 1.0, 1.0, 0.4, 0.1]]])
    start, end = torch.zeros(1, 10), torch.zeros(1, 10)
    start[0, 1], end[0, 4] = 0.9, 0.8  # proposal 0 starts in snippet 1 and ends in snippet 5; proposal 1: 2 and 6
    output = ETADOutput(torch.zeros(1, 2, 10), anchors[None], iou[None], reg[None])
    config = SMALL.replace(stages=(0.7,))
    terms = stage_loss(output, 0, ETADTargets(start, end, matched), config)
    eps = 1e-6
    assert terms["iou_cls"].item() == pytest.approx(-(math.log(0.95 + eps) + math.log(0.7 + eps)) / 2, rel=1e-5)
    assert terms["iou_reg"].item() == pytest.approx((0.2 ** 2 + 0.1 ** 2) / 2, rel=1e-5)
    # only proposal 0 (IoU 1 > 0.7) regresses, towards (0, 0, 0, log(1 + 1e-6))
    assert terms["reg_se"].item() == pytest.approx(0.125 + 0.02, rel=1e-5)
    assert terms["reg_cw"].item() == pytest.approx(0.0 + (2.0 - math.log(1 + 1e-6) - 0.5), rel=1e-5)
    # start targets at snippets (1, 2) = (0.9, 0): one positive, one negative kept; end targets at (5, 6): none
    bce_s = -(math.log(0.7 + eps) + math.log(0.6 + eps)) / 2
    bce_e = -(math.log(0.4 + eps) + math.log(0.9 + eps)) / 2
    assert terms["boundary_cls"].item() == pytest.approx(bce_s + bce_e, rel=1e-5)


def test_etad_loss_weights_switch():
    torch.manual_seed(0)
    model = ETAD(SMALL)
    x, anchors = small_batch()
    gt = [torch.tensor([[0.1, 0.4], [0.5, 0.9]]), torch.tensor([[0.2, 0.3]])]
    targets = make_targets(gt, anchors, SMALL.tscale)
    with torch.no_grad():
        output = model(x, anchors)
    totals = {}
    for choice in ("released", "paper"):
        total, log = etad_loss(output, targets, SMALL.replace(loss_weights=choice), torch.Generator().manual_seed(1))
        w = LOSS_WEIGHTS[choice]
        stages = [w["iou_cls"] * log[f"stage{i}/iou_cls"] + w["iou_reg"] * log[f"stage{i}/iou_reg"]
                  + w["boundary_reg"] * (log[f"stage{i}/reg_se"] + log[f"stage{i}/reg_cw"])
                  + w["boundary_cls"] * log[f"stage{i}/boundary_cls"] for i in (1, 2, 3)]
        assert log["stage1"] == pytest.approx(stages[0], rel=1e-5)
        assert total.item() == pytest.approx(log["tem"] + sum(stages), rel=1e-5)
        totals[choice] = (total.item(), log)
    released, paper = totals["released"][1], totals["paper"][1]
    difference = sum(4 * released[f"stage{i}/iou_reg"] - 0.5 * released[f"stage{i}/boundary_cls"] for i in (1, 2, 3))
    assert totals["released"][0] - totals["paper"][0] == pytest.approx(difference, rel=1e-4)
    assert paper["tem"] == released["tem"]


# ---- post-processing ------------------------------------------------------------------------------


def test_boundary_mask_and_selection():
    prob = torch.tensor([0.1, 0.5, 0.2, 0.3, 0.9, 0.4])
    # above 0.45: snippets 1 and 4; strict peaks: 1 and 4 (3 is below 4, 0 below 1)
    assert boundary_mask(prob).tolist() == [False, True, False, False, True, False]
    assert boundary_mask(torch.tensor([0.2, 0.1, 0.15, 0.1, 0.9])).tolist() == [True, False, True, False, True]
    start = torch.tensor([0.0, 0.0, 0.9, 0.0])  # start mask: {0 (always), 2}
    end = torch.tensor([0.0, 0.8, 0.0, 0.0])  # end mask: {1, 3 (always)}
    anchors = torch.tensor([[0.0, 0.5], [0.5, 0.99], [0.25, 0.5], [0.6, 0.9], [-0.1, 1.2]])
    # snippets (start, end): (0, 2), (2, 3), (1, 2), (2, 3), (0 clamped, 3 clamped)
    assert select_proposals(anchors, start, end).tolist() == [1, 3, 4]


def released_soft_nms(segments: list[list[float]], scores: list[float], sigma: float, max_num: int):
    """The released loop (misc.soft_nms), re-told: plain lists, stop when one candidate is left."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    starts, ends = [segments[i][0] for i in order], [segments[i][1] for i in order]
    current, out = [scores[i] for i in order], []
    while len(current) > 1 and len(out) < max_num:
        k = current.index(max(current))
        s, e, best = starts.pop(k), ends.pop(k), current.pop(k)
        out.append((s, e, best))
        for i in range(len(current)):
            inter = min(e, ends[i]) - max(s, starts[i])
            iou = inter / ((e - s) + (ends[i] - starts[i]) - inter)
            if iou > 0:
                current[i] *= math.exp(-iou * iou / sigma)
    return out


def test_soft_nms_matches_released_loop():
    g = torch.Generator().manual_seed(6)
    start = torch.rand(40, generator=g, dtype=torch.float64) * 0.7
    segments = torch.stack((start, start + 0.05 + 0.25 * torch.rand(40, generator=g, dtype=torch.float64)), 1)
    scores = torch.rand(40, generator=g, dtype=torch.float64)
    for max_num in (10, 100):
        index, decayed = soft_nms_proposals(segments, scores, sigma=0.35, max_proposals=max_num, drop_last=True)
        expected = released_soft_nms(segments.tolist(), scores.tolist(), 0.35, max_num)
        assert len(index) == len(expected) == min(max_num, 39)
        got = [(*segments[i].tolist(), s) for i, s in zip(index.tolist(), decayed.tolist(), strict=True)]
        np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-12, atol=1e-12)


def test_soft_nms_two_proposals_last_one_dropped_only_in_released_mode():
    segments = torch.tensor([[0.0, 0.5], [0.25, 0.75]])
    scores = torch.tensor([0.9, 0.8])
    index, decayed = soft_nms_proposals(segments, scores)
    iou = 0.25 / 0.75
    assert index.tolist() == [0, 1]
    np.testing.assert_allclose(decayed.numpy(), [0.9, 0.8 * math.exp(-iou * iou / 0.35)], rtol=1e-6)
    index, decayed = soft_nms_proposals(segments, scores, drop_last=True)
    assert index.tolist() == [0]
    assert soft_nms_proposals(segments[:1], scores[:1], drop_last=True)[0].tolist() == [0]


def test_postprocess_video_known_answer():
    anchors = torch.tensor([[0.0, 0.5], [0.5, 1.0], [0.25, 0.5], [0.0, 1.0], [0.6, 0.55]])
    iou = torch.tensor([[0.9, 0.5], [0.8, 0.5], [1.0, 1.0], [0.5, 0.4], [1.0, 1.0]])
    tem = torch.tensor([[0.0, 0.0, 0.9, 0.0], [0.0, 0.0, 0.8, 0.0]])  # starts {0, 2}, ends {2, 3}
    # proposal 2 starts at snippet 1 (not a start); proposal 4 is reversed: both dropped
    out = postprocess_video(anchors, iou, tem, duration=10.0, classes=[("jump", 0.5), ("run", 0.25)],
                            max_proposals=2)
    assert [d["label"] for d in out] == ["jump", "run", "jump", "run"]
    # scores 0.45 (0), 0.4 (1), 0.2 (3): 0 first; 1 does not overlap 0; then 1 (0.4) beats 3 decayed
    assert [d["segment"] for d in out] == [[0.0, 5.0], [0.0, 5.0], [5.0, 10.0], [5.0, 10.0]]
    np.testing.assert_allclose([d["score"] for d in out], [0.45 * 0.5, 0.45 * 0.25, 0.4 * 0.5, 0.4 * 0.25],
                               rtol=1e-6)


def test_detections_clip_segments():
    out = detections(torch.tensor([[-0.1, 0.5], [0.9, 1.2]]), torch.tensor([0.5, 0.25]), [("a", 1.0)], 20.0)
    assert out == [{"label": "a", "score": 0.5, "segment": [0.0, 10.0]},
                   {"label": "a", "score": 0.25, "segment": [pytest.approx(18.0), 20.0]}]
    with pytest.raises(ValueError, match="duration must be"):
        detections(torch.zeros(1, 2), torch.zeros(1), [("a", 1.0)], 0.0)


def test_classifier_scores_file(tmp_path):
    path = tmp_path / "cls.json"
    path.write_text(json.dumps({"results": {"vid1": [0.1, 0.7, 0.2], "vid2": [0.3, 0.3, 0.4]},
                                "class": ["a", "b", "c"]}))
    results, names = read_classifier_scores(path)
    assert top_classes(results["vid1"], names, 2) == [("b", 0.7), ("c", 0.2)]
    assert top_classes(results["vid2"], names, 3) == [("c", 0.4), ("a", 0.3), ("b", 0.3)]
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3\]"):
        top_classes(results["vid1"], names, 4)
    path.write_text(json.dumps({"results": {"vid1": [0.1, 0.7]}, "class": ["a", "b", "c"]}))
    with pytest.raises(ValueError, match=r"cls\.json: video 'vid1' must have 3 finite scores"):
        read_classifier_scores(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"cls\.json: not valid JSON"):
        read_classifier_scores(path)


def test_end_to_end_inference_on_small_model():
    torch.manual_seed(0)
    model = ETAD(SMALL).eval()
    x, _ = small_batch(batch=1)
    with torch.no_grad():
        output = model(x, candidate_anchors(SMALL.tscale)[None])
    anchors, iou = average_stages(output)
    out = postprocess_video(anchors[0], iou[0], output.tem[0], duration=60.0, classes=[("a", 0.9), ("b", 0.1)],
                            max_proposals=SMALL.max_proposals)
    assert 0 < len(out) <= 2 * SMALL.max_proposals
    scores = [d["score"] for d in out[::2]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= d["segment"][0] <= d["segment"][1] <= 60.0 for d in out)
