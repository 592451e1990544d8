"""TALLFormer's temporal consistency module, THUMOS head, anchors, assignment, losses and inference
helpers (models/tallformer): counts, oracles written from the released code's definitions, and
hand-computed values."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from backends import backend_params
from fastlocal.models.tallformer import (
    PRESETS,
    TCM_PARAMETERS_L60,
    ReductionConvs,
    SelfAttnTDM,
    TALLFormerConfig,
    TemporalConsistencyModule,
    THUMOSHead,
    assign,
    convert_released_head_state_dict,
    convert_released_tcm_state_dict,
    convert_sync_batchnorm,
    decode,
    detection_loss,
    diou_loss,
    inference_windows,
    level_anchors,
    make_targets,
    merge_detections,
    nms_hook,
    sigmoid_focal_loss,
    table_to_released,
    window_detections,
)
from fastlocal.models.tut.model import released_rpb_to_table

import fastlocal
from fastlocal.local_attention import IMPLEMENTED as LA_IMPLEMENTED
from fastlocal.local_attention import local_attention

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = backend_params("local_attention", LA_IMPLEMENTED, ("cpu", "reference"))
TINY = PRESETS["tiny"].model


# ---- temporal consistency module -------------------------------------------------------------


def test_tcm_parameter_count_at_l60():
    config = PRESETS["thumos-swin-b"].model
    assert config.max_seq_len == 60
    with torch.device("meta"):
        tcm = TemporalConsistencyModule(config)
    assert sum(p.numel() for p in tcm.parameters()) == TCM_PARAMETERS_L60 == 9_462_864
    assert sum(p.numel() for p in tcm.layers[0].parameters()) == 3_154_288
    assert tuple(tcm.layers[0].attn.rpb.table.shape) == (16, 119)
    assert PRESETS["thumos-swin-b"].model.replace(window_frames=768).max_seq_len == 96
    with torch.device("meta"):
        tcm96 = TemporalConsistencyModule(config.replace(window_frames=768))
    assert sum(p.numel() for p in tcm96.parameters()) == 9_466_320  # the spec's ActivityNet count


def _dense_band_attention(q, k, v, window):
    """The released SelfAttnTDM attention: full softmax with -1e9 added outside |i - j| <= window // 2."""
    T = q.shape[2]
    half = window // 2
    ones = torch.ones(T, T, dtype=q.dtype)
    mask = (1 - ones.triu(diagonal=-half) * ones.tril(diagonal=half)) * -1e9
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + mask
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("T", "window"), [(13, 7), (9, 5), (3, 7), (1, 5)])
def test_band_windows_equal_released_dense_mask(backend, T, window):
    g = torch.Generator().manual_seed(T * 10 + window)
    q, k, v = (torch.randn(2, 3, T, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, T, 4, generator=g, dtype=torch.float64)
    out = local_attention(q, k, v, window, edge="clip", backend=backend)
    got = torch.autograd.grad(out, (q, k, v), grad)
    ref = _dense_band_attention(q, k, v, window)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def _released_tcm_state(config: TALLFormerConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights in the released Transformer1DRelPos layout (as saved inside the detector)."""
    C, H, L, M = config.dim, config.tcm_heads, config.max_seq_len, config.dim * config.tcm_mlp_ratio
    shapes = {"norm1.weight": (C,), "norm1.bias": (C,), "attn.relative_position_bias_table": (2 * L - 1, H),
              "attn.qkv.weight": (3 * C, C), "attn.qkv.bias": (3 * C,), "attn.proj.weight": (C, C),
              "attn.proj.bias": (C,), "norm2.weight": (C,), "norm2.bias": (C,), "mlp.fc1.weight": (M, C),
              "mlp.fc1.bias": (M,), "mlp.fc2.weight": (C, M), "mlp.fc2.bias": (C,)}
    state = {}
    for i in range(config.tcm_layers):
        for name, shape in shapes.items():
            state[f"neck.1.encoder.layers.{i}.{name}"] = torch.randn(shape, generator=generator) * 0.3
        idx = torch.arange(L)
        state[f"neck.1.encoder.layers.{i}.attn.relative_position_index"] = idx[:, None] - idx[None, :] + L - 1
    return state


def _released_tcm_forward(state: dict[str, torch.Tensor], x: torch.Tensor, config: TALLFormerConfig) -> torch.Tensor:
    """Oracle: the released EncoderLayer1D stack (eval mode) from its definition, table index i - j."""
    B, T, C = x.shape
    H, L = config.tcm_heads, config.max_seq_len
    for i in range(config.tcm_layers):
        w = {k.split(f"layers.{i}.", 1)[1]: v.double() for k, v in state.items() if f"layers.{i}." in k}
        h = F.layer_norm(x, (C,), w["norm1.weight"], w["norm1.bias"])
        q, k, v = (F.linear(h, w["attn.qkv.weight"], w["attn.qkv.bias"]).reshape(B, T, 3, H, C // H)
                   .permute(2, 0, 3, 1, 4))
        idx = torch.arange(T)
        bias = w["attn.relative_position_bias_table"][(idx[:, None] - idx[None, :] + L - 1)].permute(2, 0, 1)
        attn = ((q * (C // H) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(B, T, C), w["attn.proj.weight"], w["attn.proj.bias"])
        h = F.layer_norm(x, (C,), w["norm2.weight"], w["norm2.bias"])
        x = x + F.linear(F.gelu(F.linear(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"])), w["mlp.fc2.weight"],
                         w["mlp.fc2.bias"])
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [8, 5])
def test_tcm_with_converted_weights_equals_released(backend, T):
    config = TINY  # L = 8: T = L and a shorter window
    state = _released_tcm_state(config, torch.Generator().manual_seed(T))
    tcm = TemporalConsistencyModule(config).double().eval()
    tcm.load_state_dict(convert_released_tcm_state_dict(state, prefix="neck.1."), strict=True)
    x = torch.randn(2, T, config.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with fastlocal.use_backend(backend):
        got = tcm(x)
    torch.testing.assert_close(got, _released_tcm_forward(state, x, config), rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="tokens"):
        tcm(torch.zeros(1, config.max_seq_len + 1, config.dim, dtype=torch.float64))


def test_bias_table_conversion_round_trip():
    L, H = 60, 16
    theirs = torch.randn(2 * L - 1, H)
    ours = released_rpb_to_table(theirs)
    assert tuple(ours.shape) == (H, 2 * L - 1)
    m = torch.arange(2 * L - 1)
    torch.testing.assert_close(ours, theirs[2 * L - 2 - m].t(), rtol=0, atol=0)  # ours[h, m] = theirs[2L-2-m, h]
    # pair (i, j): theirs reads row (i - j) + L - 1, ours column (j - i) + L - 1: the same number
    i, j = 3, 41
    assert ours[5, (j - i) + L - 1] == theirs[(i - j) + L - 1, 5]
    torch.testing.assert_close(table_to_released(ours), theirs, rtol=0, atol=0)
    released = _released_tcm_state(TINY, torch.Generator().manual_seed(0))
    state = {k.removeprefix("neck.1."): v for k, v in released.items()}
    assert set(convert_released_tcm_state_dict(state)) == set(TemporalConsistencyModule(TINY).state_dict())
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.attn\.extra"):
        convert_released_tcm_state_dict({**state, "encoder.layers.0.attn.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="no released TCM weights"):
        convert_released_tcm_state_dict(state, prefix="neck.1.")


# ---- head ------------------------------------------------------------------------------------


def test_head_level_lengths_and_output_shapes():
    config = TINY.replace(window_frames=480)  # L = 60 with tiny widths
    levels = SelfAttnTDM(config).eval()(torch.randn(2, 60, config.dim))
    assert [tuple(x.shape) for x in levels] == [(2, n, config.dim) for n in (60, 30, 15, 8, 4)]
    head = THUMOSHead(TINY).eval()
    cls, reg = head(torch.randn(3, TINY.max_seq_len, TINY.dim))
    A, C = TINY.num_anchors, TINY.num_classes
    assert [tuple(x.shape) for x in cls] == [(3, A * C, n) for n in (8, 4, 2, 1, 1)]
    assert [tuple(x.shape) for x in reg] == [(3, A * 2, n) for n in (8, 4, 2, 1, 1)]
    anchors = level_anchors(TINY, [x.shape[-1] for x in cls])
    assert [a.shape[0] for a in anchors] == [n * A for n in (8, 4, 2, 1, 1)]
    # untrained classifier: prior 0.01 everywhere (weights N(0, 0.01) on BN-normalised features)
    assert abs(torch.cat([c.flatten() for c in cls]).sigmoid().mean().item() - 0.01) < 2e-3
    assert tuple(ReductionConvs(TINY)(torch.randn(1, TINY.feature_dim, 32)).shape) == (1, TINY.dim, 8)
    with pytest.raises(ValueError, match=r"x must be \[B, T >= 1, 16\]"):
        head(torch.randn(1, 8, 5))
    with pytest.raises(ValueError, match=r"backbone features \[B, 16, T >= 1\]"):
        ReductionConvs(TINY)(torch.randn(1, 8, 32))


def test_anchors_hand_case():
    config = TINY  # strides 8, 16, ...; 3 scales per octave, octave base 2
    a0, a1 = level_anchors(config, [2, 1, 1, 1, 1])[:2]
    lengths = [16.0, 16 * 2 ** (1 / 3), 16 * 2 ** (2 / 3)]
    want0 = [[c - n / 2, c + n / 2] for c in (0.0, 8.0) for n in lengths]
    torch.testing.assert_close(a0, torch.tensor(want0))
    torch.testing.assert_close(a1, torch.tensor([[-n, n] for n in lengths]))  # stride 16: length 32 * 2^(a/3)


def test_decode_hand_case():
    anchors = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])
    deltas = torch.tensor([[0.1, 0.0], [0.0, 2.0], [-1.0, math.log(0.5)]])
    e = math.e
    want = torch.tensor([[1.0, 11.0], [5 - 5 * e, 5 + 5 * e], [-7.5, -2.5]])  # log-length clamped at 1
    torch.testing.assert_close(decode(anchors, deltas), want)
    torch.testing.assert_close(decode(anchors, deltas, max_t=12.0), want.clamp(0, 12))


def test_assignment_hand_case():
    anchors = torch.tensor([[0.0, 10.0], [10.0, 20.0], [5.0, 15.0], [30.0, 40.0], [0.0, 4.0]])
    gt = torch.tensor([[0.0, 10.0], [12.0, 20.0], [33.0, 50.0]])
    # max IoU per anchor: 1 (gt0), 0.8 (gt1), 1/3 (neg), 7/20 (neg, then gt2's best), 0.4 (ignored)
    assert assign(anchors, gt, TINY).tolist() == [1, 2, 0, 3, -1]
    assert assign(anchors, gt[:0], TINY).tolist() == [0, 0, 0, 0, 0]
    # released quirk (min_pos_iou = 0): a ground truth overlapping no anchor has best IoU 0 and takes
    # every anchor it has IoU 0 with -- here all of them, even gt0's exact match
    assert assign(anchors, torch.tensor([[0.0, 10.0], [60.0, 70.0]]), TINY).tolist() == [2, 2, 2, 2, 2]

    targets = make_targets(anchors, [gt, gt[:0]], [torch.tensor([2, 0, 1]), torch.zeros(0, dtype=torch.long)], TINY)
    C = TINY.num_classes
    assert targets.labels.tolist() == [[2, 0, C, 1, C], [C] * 5]
    assert targets.label_weights.tolist() == [[1, 1, 1, 1, 0], [1] * 5]
    assert targets.positive.tolist() == [[True, True, False, True, False], [False] * 5]
    torch.testing.assert_close(targets.segments[0], torch.tensor([[0.0, 10], [12, 20], [0, 0], [33, 50], [0, 0]]))
    assert targets.num_positive == 3 + 1  # at least one per video
    with pytest.raises(ValueError, match="gt_labels must be in"):
        make_targets(anchors, [gt], [torch.tensor([0, 1, C])], TINY)


# ---- losses ----------------------------------------------------------------------------------


def test_focal_loss_hand_values():
    logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [-1.0, 3.0]])
    labels = torch.tensor([1, 2, 0])  # 2 = background (C = 2)
    loss = sigmoid_focal_loss(logits, labels, torch.tensor([1.0, 1.0, 0.5]), gamma=2.0, alpha=0.25)
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    neg = lambda z: 0.75 * s(z) ** 2 * -math.log(1 - s(z))  # noqa: E731
    pos = lambda z: 0.25 * (1 - s(z)) ** 2 * -math.log(s(z))  # noqa: E731
    want = torch.tensor([[neg(0.0), pos(2.0)], [neg(0.0), neg(2.0)], [0.5 * pos(-1.0), 0.5 * neg(3.0)]])
    torch.testing.assert_close(loss, want)
    assert abs(loss[0, 0].item() - 0.75 * 0.25 * math.log(2)) < 1e-7


def test_diou_loss_hand_values():
    pred = torch.tensor([[0.0, 10.0], [4.0, 6.0], [2.0, 8.0], [0.0, 2.0]])
    target = torch.tensor([[5.0, 15.0], [4.0, 6.0], [0.0, 10.0], [4.0, 6.0]])
    # 1 - IoU + rho^2 / c^2: (1 - 1/3 + 25/225), 0, (1 - 0.6 + 0), (1 - 0 + 16/36)
    want = torch.tensor([1 - 1 / 3 + 25 / 225, 0.0, 0.4, 1 + 16 / 36])
    torch.testing.assert_close(diou_loss(pred, target), want, rtol=0, atol=1e-6)


def test_detection_loss_reduction():
    config = TINY
    sizes = [8, 4, 2, 1, 1]
    anchors = torch.cat(level_anchors(config, sizes))
    g = torch.Generator().manual_seed(0)
    A, C = config.num_anchors, config.num_classes
    cls = [torch.randn(2, A * C, n, generator=g) for n in sizes]
    reg = [torch.randn(2, A * 2, n, generator=g) * 0.1 for n in sizes]
    targets = make_targets(anchors, [torch.tensor([[2.0, 20.0]]), torch.tensor([[30.0, 60.0], [1.0, 5.0]])],
                           [torch.tensor([1]), torch.tensor([0, 2])], config)
    out = detection_loss(cls, reg, anchors, targets, config)
    # by hand: flatten position-major (index t * A + a), focal over weighted anchors, DIoU over positives
    logits = torch.cat([c.permute(0, 2, 1).reshape(2, -1, C) for c in cls], 1)
    deltas = torch.cat([r.permute(0, 2, 1).reshape(2, -1, 2) for r in reg], 1)
    cls_want = reg_want = 0.0
    for b in range(2):
        for n in range(anchors.shape[0]):
            w = targets.label_weights[b, n].item()
            for c in range(C):
                p = logits[b, n, c].sigmoid().item()
                if targets.labels[b, n].item() == c:
                    cls_want += w * 0.25 * (1 - p) ** 2 * -math.log(p)
                else:
                    cls_want += w * 0.75 * p**2 * -math.log(1 - p)
            if targets.positive[b, n]:
                seg = decode(anchors[n:n + 1], deltas[b, n:n + 1])
                reg_want += diou_loss(seg, targets.segments[b, n:n + 1]).item()
    assert targets.num_positive == int(targets.positive.sum())
    assert abs(out.cls.item() - cls_want / targets.num_positive) < 1e-5
    assert abs(out.reg.item() - reg_want / targets.num_positive) < 1e-5
    assert abs(out.loss.item() - out.cls.item() - out.reg.item()) < 1e-6
    empty = make_targets(anchors, [torch.zeros(0, 2)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, config)
    assert detection_loss(cls, reg, anchors, empty, config).reg.item() == 0.0


# ---- whole head: gradients, backends ---------------------------------------------------------


def _stack(config: TALLFormerConfig, seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.ModuleList([ReductionConvs(config), TemporalConsistencyModule(config), THUMOSHead(config)])


def _run(stack, x, gt, labels, config):
    cls, reg = stack[2](stack[1](stack[0](x).transpose(1, 2)))
    anchors = torch.cat(level_anchors(config, [c.shape[-1] for c in cls]))
    return cls, reg, detection_loss(cls, reg, anchors, make_targets(anchors, gt, labels, config), config)


_GT = [torch.tensor([[4.0, 30.0]]), torch.tensor([[0.0, 12.0], [40.0, 64.0]])]
_LABELS = [torch.tensor([2]), torch.tensor([0, 1])]


def test_gradient_reaches_every_parameter():
    # L = 32 so every level has T_l >= 2: at T_l = 1 an FPN output BatchNorm's bias gets an exactly zero
    # gradient (a per-channel constant, passed through a padded 1-step conv, is removed by the next BN)
    config = TINY.replace(window_frames=256)
    stack = _stack(config).train()
    x = torch.randn(2, config.feature_dim, 4 * config.max_seq_len, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    _, _, loss = _run(stack, x, _GT, _LABELS, config)
    loss.loss.backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert torch.isfinite(loss.loss)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] == "cpu"])
def test_cpu_backend_equals_reference_for_whole_head(backend):
    """Training mode (drop path, dropout on probabilities and activations): the same seed gives the
    same draws on both backends, so outputs and every gradient must agree."""
    x = torch.randn(2, TINY.feature_dim, 4 * TINY.max_seq_len, generator=torch.Generator().manual_seed(4))
    results = []
    for name in (backend, "reference"):
        stack = _stack(TINY, seed=1).train()
        torch.manual_seed(7)
        with fastlocal.use_backend(name):
            cls, reg, loss = _run(stack, x, _GT, _LABELS, TINY)
            loss.loss.backward()
        results.append((cls + reg, {n: p.grad for n, p in stack.named_parameters()}))
    (out_a, grads_a), (out_b, grads_b) = results
    for a, b in zip(out_a, out_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


def test_sync_batchnorm_under_distributed(tmp_path):
    head = THUMOSHead(TINY)
    assert convert_sync_batchnorm(head) is head  # no process group: unchanged
    torch.distributed.init_process_group("gloo", init_method=f"file://{os.fspath(tmp_path / 'store')}", rank=0,
                                         world_size=1)
    try:
        converted = convert_sync_batchnorm(head)
    finally:
        torch.distributed.destroy_process_group()
    kinds = {type(m) for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds == {torch.nn.SyncBatchNorm}
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == 2 * 5 + 2 * TINY.head_convs


# ---- config and inference helpers ------------------------------------------------------------


def test_config_validation_and_presets():
    paper = PRESETS["thumos-swin-b"].model
    assert (paper.max_seq_len, paper.strides, paper.num_anchors) == (60, (8, 16, 32, 64, 128), 5)
    assert PRESETS["thumos-swin-t"].model.feature_dim == 768
    assert PRESETS["thumos-swin-b"].train.optimizer == "sgd"
    for field, value, match in [("window_frames", 100, "multiple of 8"), ("tdm_windows", (7, 6), "odd"),
                                ("tcm_heads", 7, "divisible"), ("neg_iou", 0.7, "neg_iou"),
                                ("tcm_drop_path", 1.0, "tcm_drop_path"), ("test_overlap", 1.0, "test_overlap")]:
        with pytest.raises(ValueError, match=match):
            TALLFormerConfig(**{field: value})


def test_test_windows():
    c = PRESETS["thumos-swin-b"].model  # 480 frames, overlap 0.25: stride 360
    assert inference_windows(1000, c) == [(0, 480), (360, 840), (720, 1000)]
    assert inference_windows(840, c) == [(0, 480), (360, 840)]
    assert inference_windows(480, c) == [(0, 480)]
    assert inference_windows(100, c) == [(0, 100)]
    with pytest.raises(ValueError, match="num_frames"):
        inference_windows(0, c)


def test_window_detections_and_merge(monkeypatch):
    config = TINY.replace(nms_pre=2)
    sizes = [8, 4, 2, 1, 1]
    A, C = config.num_anchors, config.num_classes
    cls = [torch.full((A * C, n), -10.0) for n in sizes]
    reg = [torch.zeros(A * 2, n) for n in sizes]
    cls[0][1 * C + 2, 3] = 2.0  # level 0, position 3, anchor 1, class 2
    cls[0][0 * C + 0, 7] = 1.0  # level 0, position 7, anchor 0, class 0
    segments, scores = window_detections(cls, reg, config, length=50, shift=100)
    assert segments.shape == (5 * 2, 2) and scores.shape == (10, C)  # 2 per level (levels 3, 4 have 3 anchors)
    half = 8 * 2 * 2 ** (1 / 3) / 2
    torch.testing.assert_close(segments[0], torch.tensor([100 + 24 - half, 100 + 24 + half]))
    torch.testing.assert_close(segments[1], torch.tensor([100.0 + 56 - 8, 100.0 + 50]))  # clamped to the window
    torch.testing.assert_close(scores[:2, [2, 0]].diagonal(), torch.tensor([2.0, 1.0]).sigmoid())

    seen = {}

    def fake_nmw(seg, score, label, iou, max_output):
        seen.update(seg=seg, score=score, label=label, iou=iou, max_output=max_output)
        return seg, score, label

    merge_detections([segments, segments + 1000], [scores, scores], config, nmw=fake_nmw)
    assert seen["label"].tolist() == [2, 0, 2, 0] and (seen["iou"], seen["max_output"]) == (0.5, 1200)
    torch.testing.assert_close(seen["seg"][2], segments[0] + 1000)


def test_default_merge_is_the_released_multiclass_nmw():
    """merge_detections with the default hook == fastlocal.multiclass_nmw_1d, the released front end."""
    g = torch.Generator().manual_seed(0)
    start = torch.rand(60, generator=g) * 100
    segments = torch.stack([start, start + 1 + torch.rand(60, generator=g) * 30], dim=1)
    scores = torch.rand(60, 3, generator=g) * 0.2
    config = TINY.replace(max_per_video=25)
    seg, score, label = merge_detections([segments], [scores], config)
    ref_seg, ref_score, ref_label = fastlocal.multiclass_nmw_1d(
        segments, scores, score_threshold=config.score_threshold, iou_threshold=config.nmw_iou,
        max_output=config.max_per_video)
    assert seg.shape == (25, 2) and torch.equal(label, ref_label)
    torch.testing.assert_close(seg, ref_seg)
    torch.testing.assert_close(score, ref_score)
    nms_seg, nms_score, nms_label = merge_detections([segments], [scores], config, nmw=nms_hook)
    candidates = _candidates(segments, scores, config)
    kept = fastlocal.batched_nms_1d(*candidates, config.nmw_iou)[:25]
    for got, want in zip((nms_seg, nms_score, nms_label), candidates, strict=True):
        assert torch.equal(got, want[kept])


def _candidates(segments: torch.Tensor, scores: torch.Tensor, config) -> tuple[torch.Tensor, ...]:
    rows, labels = (scores > config.score_threshold).nonzero(as_tuple=True)
    return segments[rows], scores[rows, labels], labels


def _released_head_state(config: TALLFormerConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights (and BatchNorm statistics) in the released detector's layout for neck.0, neck.2,
    neck.3 and head."""
    D, Fc, Hc, A, C = config.dim, config.fpn_channels, config.head_channels, config.num_anchors, config.num_classes
    shapes = {"neck.0.conv1.weight": (D, config.feature_dim, 3), "neck.0.conv1.bias": (D,),
              "neck.0.conv2.weight": (D, D, 3), "neck.0.conv2.bias": (D,)}
    for i in range(len(config.tdm_windows)):
        t = f"neck.2.trans_layers.{i}."
        M = D * config.tdm_mlp_ratio
        shapes.update({f"neck.2.reductions.{i}.0.weight": (D, 2 * D), f"neck.2.reductions.{i}.1.weight": (D,),
                       f"neck.2.reductions.{i}.1.bias": (D,), t + "self_attn.in_proj_weight": (3 * D, D),
                       t + "self_attn.in_proj_bias": (3 * D,), t + "self_attn.out_proj.weight": (D, D),
                       t + "self_attn.out_proj.bias": (D,), t + "linear1.weight": (M, D), t + "linear1.bias": (M,),
                       t + "linear2.weight": (D, M), t + "linear2.bias": (D,), t + "norm1.weight": (D,),
                       t + "norm1.bias": (D,), t + "norm2.weight": (D,), t + "norm2.bias": (D,)})

    def conv_module(name, cin, cout, k):
        shapes.update({f"{name}.conv.weight": (cout, cin, k), f"{name}.bn.weight": (cout,), f"{name}.bn.bias": (cout,),
                       f"{name}.bn.running_mean": (cout,), f"{name}.bn.running_var": (cout,)})

    for i in range(config.num_levels):
        conv_module(f"neck.3.lateral_convs.{i}", D, Fc, 1)
        conv_module(f"neck.3.fpn_convs.{i}", Fc, Fc, 3)
    for i in range(config.head_convs):
        conv_module(f"head.cls_convs.{i}", Fc if i == 0 else Hc, Hc, 3)
        conv_module(f"head.reg_convs.{i}", Fc if i == 0 else Hc, Hc, 3)
    shapes.update({"head.retina_cls.weight": (A * C, Hc, 3), "head.retina_cls.bias": (A * C,),
                   "head.retina_reg.weight": (A * 2, Hc, 3), "head.retina_reg.bias": (A * 2,)})
    state = {k: torch.randn(s, generator=generator, dtype=torch.float64) * 0.3 for k, s in shapes.items()}
    for k in list(state):
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
        if k.endswith("bn.running_var"):
            state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(3)
    state["neck.2.pe.pe"] = torch.zeros(5000, 1, D)
    return state


def _released_head_forward(s, feats, tcm, config):
    """Oracle (eval mode) of the released SRMSwin convs, SelfAttnTDM with its dense -1e9 band mask, FPN and
    RetinaHead, from their definitions. ``feats [B, feature_dim, T]``; ``tcm`` stands in for neck.1."""
    x = F.conv1d(F.relu(F.conv1d(feats, s["neck.0.conv1.weight"], s["neck.0.conv1.bias"], stride=2, padding=1)),
                 s["neck.0.conv2.weight"], s["neck.0.conv2.bias"], stride=2, padding=1)
    reduced = x
    x = tcm(x.transpose(1, 2)).permute(1, 0, 2)  # [T, B, C]
    T, B, D = x.shape
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, D, 2, dtype=torch.float64) * (-math.log(10000.0) / D))
    pe = torch.zeros(T, D, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    x = x + pe[:, None] / math.sqrt(D)
    levels = [x]
    H = config.tdm_heads
    for i, k in enumerate(config.tdm_windows):
        t = f"neck.2.trans_layers.{i}."
        if x.shape[0] % 2:
            x = F.pad(x, (0, 0, 0, 0, 0, 1))
        x = x.reshape(x.shape[0] // 2, 2, B, D).permute(0, 2, 1, 3).reshape(-1, B, 2 * D)  # (t s) b c -> t b (s c)
        x = F.layer_norm(F.linear(x, s[f"neck.2.reductions.{i}.0.weight"]), (D,), s[f"neck.2.reductions.{i}.1.weight"],
                         s[f"neck.2.reductions.{i}.1.bias"])
        n = x.shape[0]
        qkv = F.linear(x, s[t + "self_attn.in_proj_weight"], s[t + "self_attn.in_proj_bias"])
        q, kk, v = (z.reshape(n, B * H, D // H).transpose(0, 1) for z in qkv.chunk(3, -1))
        ones = torch.ones(n, n, dtype=torch.float64)
        mask = (1 - ones.triu(diagonal=-(k // 2)) * ones.tril(diagonal=k // 2)) * -1e9
        attn = torch.bmm(q * (D // H) ** -0.5, kk.transpose(1, 2)) + mask
        o = torch.bmm(attn.softmax(-1), v).transpose(0, 1).reshape(n, B, D)
        x = F.layer_norm(x + F.linear(o, s[t + "self_attn.out_proj.weight"], s[t + "self_attn.out_proj.bias"]), (D,),
                         s[t + "norm1.weight"], s[t + "norm1.bias"])
        ff = F.linear(F.relu(F.linear(x, s[t + "linear1.weight"], s[t + "linear1.bias"])), s[t + "linear2.weight"],
                      s[t + "linear2.bias"])
        x = F.layer_norm(x + ff, (D,), s[t + "norm2.weight"], s[t + "norm2.bias"])
        levels.append(x)

    def conv_module(name, z, relu):
        z = F.conv1d(z, s[f"{name}.conv.weight"], padding=s[f"{name}.conv.weight"].shape[-1] // 2)
        z = F.batch_norm(z, s[f"{name}.bn.running_mean"], s[f"{name}.bn.running_var"], s[f"{name}.bn.weight"],
                         s[f"{name}.bn.bias"], training=False)
        return F.relu(z) if relu else z

    lat = [conv_module(f"neck.3.lateral_convs.{i}", z.permute(1, 2, 0), False) for i, z in enumerate(levels)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-1], mode="nearest")
    cls, reg = [], []
    for i, z in enumerate(lat):
        z = conv_module(f"neck.3.fpn_convs.{i}", z, False)
        c, r = z, z
        for j in range(config.head_convs):
            c, r = conv_module(f"head.cls_convs.{j}", c, True), conv_module(f"head.reg_convs.{j}", r, True)
        cls.append(F.conv1d(c, s["head.retina_cls.weight"], s["head.retina_cls.bias"], padding=1))
        reg.append(F.conv1d(r, s["head.retina_reg.weight"], s["head.retina_reg.bias"], padding=1))
    return reduced, cls, reg


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_with_converted_weights_equals_released(backend):
    config = TINY.replace(tdm_windows=(3, 3, 1, 3))  # bands narrower than the levels: 8 -> 4 -> 2 -> 1 -> 1
    state = _released_head_state(config, torch.Generator().manual_seed(2))
    reduction_state, head_state = convert_released_head_state_dict({"module." + k: v for k, v in state.items()},
                                                                   prefix="module.")
    reduction, head = ReductionConvs(config).double().eval(), THUMOSHead(config).double().eval()
    reduction.load_state_dict(reduction_state, strict=True)
    head.load_state_dict(head_state, strict=True)
    tcm = TemporalConsistencyModule(config).double().eval()
    feats = torch.randn(2, config.feature_dim, 4 * config.max_seq_len, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(3))
    with fastlocal.use_backend(backend):
        reduced = reduction(feats)
        cls, reg = head(tcm(reduced.transpose(1, 2)))
    want_reduced, want_cls, want_reg = _released_head_forward(state, feats, tcm, config)
    torch.testing.assert_close(reduced, want_reduced, rtol=1e-10, atol=1e-10)
    for got, want in zip(cls + reg, want_cls + want_reg, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-9)
    with pytest.raises(ValueError, match=r"neck\.3\.extra"):
        convert_released_head_state_dict({**state, "neck.3.extra": torch.zeros(1)})
