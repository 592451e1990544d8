"""TALLFormer assembled (models/tallformer/model.py, memory.py, data.py): chunk arithmetic, the
long-term memory step against full end-to-end encoding (outputs and gradients), the data's
windows and errors, a tiny model trained on synthetic raw frames to a real mAP, and the CLI
(init-memory, train, eval)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastlocal.models import engine
from fastlocal.models.cli import main
from fastlocal.models.configs import replace
from fastlocal.models.tallformer import (
    PRESETS,
    TALLFormer,
    TALLFormerTask,
    THUMOSWindows,
    encode_video,
    memory_rows,
    memory_step,
    nms_hook,
    temporal_random_crop,
)

from fastlocal.data import DatasetError
from fastlocal.data.synthetic_detection import SyntheticDetectionSpec, generate
from fastlocal.metrics.detection import THUMOS_TIOU_THRESHOLDS, detection_map
from fastlocal.selective import LongMemory, sample_indices

pytestmark = pytest.mark.usefixtures("one_thread")

#: the tiny preset on 16 x 16 frames, no drop path (so training-mode encoding is deterministic)
TINY = PRESETS["tiny"].model.replace(short_side=16, image_size=16, backbone_drop_path=0.0, merge="nms")
#: and no dropout or drop path anywhere: two passes in training mode give the same outputs
EXACT = TINY.replace(tdm_dropout=0.0, tcm_drop_path=0.0)


def _model(config=EXACT, memory=None, seed=0):
    torch.manual_seed(seed)
    return TALLFormer(config, memory).train()


# ---- chunk arithmetic and shapes ----------------------------------------------------------------


def test_chunk_arithmetic_thumos():
    paper = PRESETS["thumos-swin-b"].model
    assert (paper.chunks_per_window, paper.chunk_frames, paper.keep_ratio) == (15, 32, 0.15)
    assert sample_indices(15, paper.keep_ratio, "random").numel() == 2  # released int(15 * 0.15)
    assert sample_indices(15, 0.4, "random").numel() == 6
    assert (paper.backbone_config.out_channels, PRESETS["thumos-swin-t"].model.backbone_config.out_channels) == (
        1024, 768)
    rows = memory_rows(10, 15, 16)  # a 480-frame window at frame 10: rows 5..244
    assert rows.shape == (15, 16) and rows[0, 0] == 5 and rows[-1, -1] == 5 + 239
    with pytest.raises(ValueError, match="even"):
        memory_rows(3, 15, 16)


def test_config_backbone_and_memory_fields():
    config = PRESETS["thumos-swin-b"].model
    swin = config.backbone_config
    assert (swin.embed_dim, swin.depths, swin.num_heads, swin.window_size) == (128, (2, 2, 18, 2), (4, 8, 16, 32),
                                                                              (8, 7, 7))
    assert (swin.drop_path, swin.frozen_stages, swin.gradient_checkpointing) == (0.2, 2, True)
    assert PRESETS["thumos-swin-b"].train.backbone_lr_scale == 0.4
    for changes, match in [({"chunk_frames": 64}, "chunk_frames"), ({"chunk_frames": 31, "window_frames": 496},
                           "chunk_frames"), ({"keep_ratio": 0.0}, "keep_ratio"), ({"image_size": 300}, "image_size"),
                           ({"backbone_heads": (4, 8, 16)}, "backbone_"), ({"merge": "soft"}, "merge")]:
        with pytest.raises(ValueError, match=match):
            config.replace(**changes)
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        replace(PRESETS["thumos-swin-b"].train, backbone_lr_scale=-1.0)


def test_shapes_and_memory_layout():
    model = _model().eval()
    video = torch.randn(2, 3, 64, 16, 16)
    with torch.no_grad():
        features = model.features(video)
        cls, seg = model(video)
    assert features.shape == (2, 32, 16)  # [B, F / 2, C]
    assert [c.shape[-1] for c in cls] == [8, 4, 2, 1, 1]  # 64 frames / 8, then halved per stage
    assert cls[0].shape[1] == TINY.num_anchors * TINY.num_classes and seg[0].shape[1] == TINY.num_anchors * 2
    # a whole video of 37 frames (not whole chunks): ceil(37 / 2) rows, float32, equal to one-piece encoding
    long = torch.randn(1, 3, 37, 16, 16)
    whole = encode_video(model.encoder, lambda s, e: long[0, :, s:e], 37, chunks_per_call=1)
    assert whole.shape == (19, 16) and whole.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(whole, model.encoder(long)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fewer than one chunk"):
        encode_video(model.encoder, lambda s, e: long[0, :, s:e], 15)
    with pytest.raises(ValueError, match="feature_dim"):
        TALLFormer(EXACT.replace(feature_dim=24))


# ---- the memory step ----------------------------------------------------------------------------


def _video_and_memory(model, frames=96, seed=1):
    """A video, its features as the encoder gives them now, and a memory holding them."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(1, 3, frames, 16, 16, generator=g)
    with torch.no_grad():
        current = model.encoder(video)[0]
    memory = LongMemory("ram")
    memory.init("v", current)
    return video, current, memory


def test_memory_holds_exactly_the_detached_features_written():
    model = _model()
    memory = LongMemory("ram")
    stale = torch.randn(48, 16)  # a 96-frame video; the memory holds values unlike the encoder's
    memory.init("v", stale)
    g = torch.Generator().manual_seed(2)
    video = torch.randn(1, 3, 96, 16, 16, generator=g)
    window = video[:, :, 32:96]  # offset 32: rows 16..47, chunks of 8 rows
    kept = torch.tensor([1, 3])
    out = memory_step(model.encoder, window, memory, ["v"], [32], 0.5, kept=kept)
    with torch.no_grad():
        fresh = model.encoder.encode_chunks(model.encoder.split(window)[:, kept])  # [1, 2, 8, 16]
    after = memory.read("v")
    assert not after.requires_grad
    rows = memory_rows(32, 4, 8)
    torch.testing.assert_close(after[rows[kept].flatten()], fresh.flatten(0, 2), rtol=0, atol=1e-6)
    untouched = torch.ones(48, dtype=torch.bool)
    untouched[rows[kept].flatten()] = False
    assert torch.equal(after[untouched], stale[untouched])  # nothing else written
    # the step's output: fresh rows for the kept chunks, the stored ones (as read) for the others
    assert torch.equal(out[0, rows[0] - 16], stale[rows[0]]) and torch.equal(out[0, rows[2] - 16], stale[rows[2]])
    torch.testing.assert_close(out[0, rows[1] - 16].detach(), fresh[0, 0], rtol=0, atol=1e-6)


def test_rows_past_the_video_read_as_zeros_and_are_not_written():
    model = _model()
    memory = LongMemory("ram")
    stale = torch.randn(20, 16)  # a 40-frame video in a 64-frame window: rows 20..31 lie past its end
    memory.init("v", stale)
    window = torch.randn(1, 3, 64, 16, 16)
    out = memory_step(model.encoder, window, memory, ["v"], [0], 0.5, kept=torch.tensor([0]))
    assert torch.equal(out[0, 20:], torch.zeros(12, 16)) and torch.equal(out[0, 8:20], stale[8:20])
    assert memory.shape("v") == (20, 16)


def _head_loss(model, features):
    model.head.eval()  # BatchNorm on running statistics: batches of one window, the last level of length 1
    cls, seg = model.head_forward(features)
    return sum((c.float() ** 2).mean() for c in cls) + sum((s.float() ** 2).mean() for s in seg)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_keep_ratio_one_equals_full_end_to_end():
    """Every chunk kept: the memory step's features, loss and every gradient equal full encoding."""
    full = _model()
    video, _, memory = _video_and_memory(full)
    window = video[:, :, :64]
    loss = _head_loss(full, full.features(window))
    loss.backward()
    expected = _grads(full)
    stepped = _model(EXACT.replace(keep_ratio=1.0), memory)
    stepped.load_state_dict(full.state_dict())
    features = memory_step(stepped.encoder, window, memory, ["v"], [0], 1.0)
    with torch.no_grad():
        torch.testing.assert_close(features, full.features(window), rtol=1e-5, atol=1e-6)
    _head_loss(stepped, features).backward()
    got = _grads(stepped)
    assert got.keys() == expected.keys() and any(n.startswith("encoder.") for n in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_memory_equal_to_current_features_gives_full_outputs():
    """With the memory holding the encoder's current features, a step at keep ratio 0.25 gives the
    full encoding's features and the head's gradients; the backbone's gradient is the full one's
    with the un-kept chunks' features detached (an independent autograd oracle)."""
    model = _model(memory=None)
    video, current, memory = _video_and_memory(model)
    window = video[:, :, 32:96]
    kept = torch.tensor([2])
    model.memory = memory
    features = model.features(window, ["v"], [32], kept=kept)
    torch.testing.assert_close(features.detach(), current[None, 16:48], rtol=1e-5, atol=1e-6)
    _head_loss(model, features).backward()
    got = _grads(model)
    model.zero_grad(set_to_none=True)
    chunks = model.encoder.encode_chunks(model.encoder.split(window))  # [1, 4, 8, 16], all with autograd
    mask = torch.zeros(4, dtype=torch.bool)
    mask[kept] = True
    oracle = torch.where(mask[None, :, None, None], chunks, chunks.detach()).flatten(1, 2)
    _head_loss(model, oracle).backward()
    expected = _grads(model)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_only_kept_chunks_receive_gradient():
    model = _model()
    video, _, memory = _video_and_memory(model)
    window = video[:, :, :64].clone().requires_grad_(True)
    features = memory_step(model.encoder, window, memory, ["v"], [0], 0.5, kept=torch.tensor([1, 2]))
    _head_loss(model, features).backward()
    per_chunk = window.grad.abs().reshape(3, 4, 16, 16, 16).sum(dim=(0, 2, 3, 4))
    assert per_chunk[1] > 0 and per_chunk[2] > 0
    assert per_chunk[0] == 0 and per_chunk[3] == 0


def test_model_uses_memory_in_training_only():
    model = _model(memory=None)
    video, current, memory = _video_and_memory(model)
    stale = torch.zeros_like(current)
    memory.init("v", stale)
    model.memory = memory
    window = video[:, :, :64]
    with pytest.raises(ValueError, match="keys= and offsets="):
        model(window)
    g = torch.Generator().manual_seed(0)
    model.generator = g
    features = model.features(window, ["v"], [0])  # keep 0.25 of 4 chunks: 1 encoded, 3 read (zeros)
    assert int((features.detach().abs().sum(-1) == 0).sum()) == 24
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.features(window), current[None, :32], rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="init-memory"):
        model.train().features(window, ["missing"], [0])


# ---- data ---------------------------------------------------------------------------------------


def test_temporal_random_crop_keeps_by_iof():
    rng = np.random.default_rng(0)
    segments = np.array([[0.0, 40.0], [100.0, 110.0]])
    for _ in range(20):
        start, keep = temporal_random_crop(200, 64, segments, 0.75, rng)
        assert start % 2 == 0 and 0 <= start <= 136
        inter = np.clip(np.minimum(segments[:, 1], start + 64) - np.maximum(segments[:, 0], start), 0, None)
        assert np.array_equal(keep, inter / (segments[:, 1] - segments[:, 0]) >= 0.75)
        assert keep.any()
    start, keep = temporal_random_crop(50, 64, segments, 0.75, rng)  # shorter than the window: from 0
    assert start == 0 and keep.tolist() == [True, False]


@pytest.fixture(scope="module")
def frames_data(tmp_path_factory):
    """28 synthetic videos of 64..128 tiny frames at 15 fps, 3 classes (20 training, 8 validation)."""
    spec = SyntheticDetectionSpec(videos=28, validation=0.3, classes=3, min_length=64, max_length=128, max_actions=2,
                                  min_action=0.15, max_action=0.4, noise=0.3, seconds_per_step=1 / 15,
                                  frame_size=16, seed=0)
    return generate(tmp_path_factory.mktemp("tallformer_frames"), spec)


def test_windows_and_errors(frames_data, tmp_path):
    gt = frames_data / "annotations.json"
    train = THUMOSWindows(gt, frames_data / "frames", "training", TINY, training=True, fps=15)
    test = THUMOSWindows(gt, frames_data / "frames", "validation", TINY, training=False, fps=15,
                         classes=train.classes)
    assert len(train) == 20 and train.classes == ["dive", "jump", "throw"]
    item = train[0]
    assert item.frames.shape == (3, 64, 16, 16) and item.offset % 2 == 0
    assert (item.segments >= 0).all() and (item.segments <= item.length).all()
    # test windows: 64 frames every 48 (overlap 0.25), the last one ending at the video's end, zero-padded
    vid = test.video_ids[0]
    n = test.num_frames[vid]
    windows = [(w.offset, w.offset + w.length) for w in (test[i] for i in range(len(test))) if w.video_id == vid]
    assert windows[0] == (0, 64) and windows[-1][1] == n
    last = [test[i] for i in range(len(test)) if test[i].video_id == vid][-1]
    assert torch.equal(last.frames[:, last.length:], torch.zeros_like(last.frames[:, last.length:]))
    # errors name the video
    data = json.loads(gt.read_text())
    data["database"]["ghost"] = {"subset": "training", "duration": 5.0, "annotations": []}
    (tmp_path / "missing.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"'ghost'.*does not exist"):
        THUMOSWindows(tmp_path / "missing.json", frames_data / "frames", "training", TINY, training=True)
    del data["database"]["ghost"]
    first = next(iter(data["database"]))
    data["database"][first]["duration"] = 100.0
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=f"{first}.*frames are missing"):
        THUMOSWindows(tmp_path / "short.json", frames_data / "frames", None, TINY, training=True, fps=15)
    with pytest.raises(DatasetError, match="fewer than one chunk"):
        THUMOSWindows(gt, frames_data / "frames", "training", TINY.replace(chunk_frames=256, window_frames=256),
                      training=True, fps=15)


def test_video_files_read_as_their_frame_folders(frames_data, tmp_path):
    """Videos as files (``name_template="{video}.mp4"``, decoded by PyAV) give the windows their frame
    folders give (lossless RGB H.264, so exactly)."""
    from fastlocal.data.video import read_frames, write_video

    gt = frames_data / "annotations.json"
    folders = THUMOSWindows(gt, frames_data / "frames", "validation", TINY, training=False, fps=15)
    for vid in folders.video_ids:
        write_video(tmp_path / f"{vid}.mp4", read_frames(frames_data / "frames" / vid), fps=15, codec="libx264rgb",
                    crf=0)
    files = THUMOSWindows(gt, tmp_path, "validation", TINY, training=False, fps=15, name_template="{video}.mp4")
    assert files.num_frames == folders.num_frames and len(files) == len(folders)
    for i in (0, len(files) - 1):
        a, b = files[i], folders[i]
        assert (a.video_id, a.offset, a.length) == (b.video_id, b.offset, b.length)
        assert torch.equal(a.frames, b.frames)


def test_nms_hook_keeps_classes_apart():
    segments = torch.tensor([[0.0, 10.0], [1.0, 10.0], [0.0, 10.0], [50.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    _, sc, lab = nms_hook(segments, scores, labels, 0.5, 10)
    assert sc.tolist() == pytest.approx([0.9, 0.7, 0.6]) and lab.tolist() == [0, 1, 0]
    assert nms_hook(segments, scores, labels, 0.5, 2)[1].tolist() == pytest.approx([0.9, 0.7])


# ---- training ------------------------------------------------------------------------------------


def test_tiny_model_trains_to_map_above_whole_video_baseline(frames_data):
    gt = frames_data / "annotations.json"
    train = THUMOSWindows(gt, frames_data / "frames", "training", TINY, training=True, fps=15)
    test = THUMOSWindows(gt, frames_data / "frames", "validation", TINY, training=False, fps=15,
                         classes=train.classes)
    config = TINY.replace(backbone_drop_path=0.1)
    task = TALLFormerTask(config, train, test, seed=0)
    assert task.init_memory(progress=False) == {"encoded": 20, "skipped": 0}
    assert task.init_memory(progress=False) == {"encoded": 0, "skipped": 20}  # complete videos are skipped
    # the backbone 10x slower than the head, as released (0.4x): the memory's features stay close to the encoder's
    train_config = replace(PRESETS["tiny"].train, epochs=40, optimizer="adamw", lr=3e-3, batch_size=4,
                           scheduler="cosine", eval_every=0, backbone_lr_scale=0.1)
    net, history = engine.fit(task, train_config, None, progress=False, log=None)
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    trained = engine.evaluate(task, net)["average_mAP"]
    # trivial baseline: every class of the ground truth over each whole video
    baseline = {vid: [{"label": c, "score": 1.0, "segment": [0.0, test.num_frames[vid] / 15]}
                      for c in test.ground_truth.classes] for vid in test.video_ids}
    trivial = 100 * detection_map(test.ground_truth, {"results": baseline}, THUMOS_TIOU_THRESHOLDS,
                                  subset=None).average_map
    # measured 35.5 against 3.0 here; other seeds of the data and of the training: 26.2..62.8 against 3.0..8.0
    assert trivial < 10.0, trivial
    assert trained > 20.0 and trained > trivial + 15.0, (trained, trivial)


def test_cli_init_memory_train_eval(frames_data, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--data", str(frames_data), "--out", str(run), "--set", "image_size=16",
              "--set", "short_side=16", "--set", "merge=nms", "--no-progress"]
    assert main(["tallformer", "init-memory", *common]) == 0
    assert "encoded 20 video(s), skipped 0" in capsys.readouterr().out
    assert len(list((run / "memory").glob("video_*.npy"))) == 20
    assert main(["tallformer", "init-memory", *common]) == 0  # resumes: nothing left to encode
    assert "encoded 0 video(s), skipped 20" in capsys.readouterr().out
    files = sorted((run / "memory").glob("video_*.npy"))
    before = [np.load(f) for f in files]
    assert main(["tallformer", "train", *common, "--epochs", "1", "--batch-size", "4"]) == 0
    after = [np.load(f) for f in files]
    assert all(a.shape == b.shape and a.dtype == np.float32 for a, b in zip(after, before, strict=True))
    # training wrote the kept chunks' fresh features back: some rows changed, most did not
    changed = sum(int((a != b).any(axis=1).sum()) for a, b in zip(after, before, strict=True))
    assert 0 < changed < sum(len(a) for a in after) / 2
    assert main(["tallformer", "eval", *common]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert set(record) >= {"average_mAP", "mAP@0.30", "mAP@0.70"} and record["subset"] == "validation"
    submission = json.loads((run / "detections.json").read_text())["results"]
    assert len(submission) == 8 and all(0 <= d["segment"][0] <= d["segment"][1] for v in submission.values()
                                        for d in v)
    capsys.readouterr()
    assert main(["tallformer", "train", "--preset", "tiny", "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "--data" in capsys.readouterr().err
    fresh = [a if a != str(run) else str(tmp_path / "fresh") for a in common]
    assert main(["tallformer", "train", *fresh, "--epochs", "1"]) == 2  # no memory yet
    assert "lacks 20 of 20 training videos" in capsys.readouterr().err


# ---- benchmark suite ----------------------------------------------------------------------------


def test_bench_suite_is_opt_in_and_its_methods_agree():
    """``python -m fastlocal bench --ops tallformer`` only; on the tiny configurations full backprop and
    checkpointing take the same first step, the memory steps a finite one, and the TCM + stages agree
    across local_attention backends (output and input gradient)."""
    from fastlocal.bench.ops import MODEL_SUITES, SUITES
    from fastlocal.bench.tallformer import TALLFormerSuite

    assert "tallformer" in MODEL_SUITES and "tallformer" not in SUITES
    suite = TALLFormerSuite()
    step, temporal = suite.tiny_configs
    assert suite.skip_reason("fastlocal[cpu]", step, "forward_backward") is not None
    assert suite.skip_reason("full", step, "forward") == "a training step only"
    full, checkpointed = (suite.build(m, step, "forward_backward")()[0] for m in ("full", "checkpoint"))
    torch.testing.assert_close(full, checkpointed, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(suite.build("memory-0.15", step, "forward_backward")()[0])
    for mode in ("forward", "forward_backward"):
        ours, peer = (suite.build(m, temporal, mode)() for m in ("fastlocal[cpu]", "fastlocal[reference]"))
        for a, b in zip(ours, peer, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
