"""ETAD on the engine: training to a real mAP, the command line end to end, and the end-to-end task.

1. Feature mode, ``small`` preset, on the synthetic detection set (fastlocal.data.synthetic_detection):
   trained with :func:`engine.fit` on CPU, its detection mAP (ActivityNet thresholds) is far above
   a trivial baseline computed with the same ``detection_map`` on the same ground truth: one
   proposal per video covering all of it, once for every class the video truly holds.
2. ``python -m fastlocal.models etad train`` then ``eval``: the submission files are in the
   ActivityNet layout and ``eval.json``'s mAP is what ``detection_map`` gives on the written file.
3. End-to-end mode on tiny frame folders: one :func:`engine.fit` step; the backbone sees exactly
   the sampled snippets with autograd on (the gradient equality itself is
   tests/test_encoder_sampling.py's), frozen stages and BatchNorm do not move, and the backbone
   and detector move by their own learning rates (AdamW's first step moves a parameter by about lr).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastlocal.models import engine
from fastlocal.models.backbones import R2Plus1DConfig, sampled_snippets
from fastlocal.models.cli import main
from fastlocal.models.configs import replace
from fastlocal.models.etad import PRESETS, ETADConfig, ETADEndToEndTask, ETADTask, SnippetDataset
from fastlocal.models.etad.e2e import KINETICS_MEAN, KINETICS_STD, snippet_starts
from torch.nn.modules.batchnorm import _BatchNorm

from fastlocal.data import DetectionDataset, read_ground_truth
from fastlocal.data.synthetic_detection import SyntheticDetectionSpec, generate
from fastlocal.data.video import write_frames
from fastlocal.metrics import detection_map

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = PRESETS["small"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The generator's default set: 60 videos (45 training, 15 validation), 5 classes, 32-D features."""
    return generate(tmp_path_factory.mktemp("etad_synthetic"), SyntheticDetectionSpec(seed=0))


def datasets(root, tscale: int) -> tuple[DetectionDataset, DetectionDataset]:
    train = DetectionDataset(root / "annotations.json", root / "features", "training", length=tscale,
                             out_of_range="clip", min_action=0.01)
    test = DetectionDataset(root / "annotations.json", root / "features", "validation", length=tscale,
                            out_of_range="keep")
    return train, test


def whole_video_baseline(ground_truth) -> dict:
    """One proposal per video spanning it, scored 1, once per class the video holds (oracle classes)."""
    return {"results": {vid: [{"label": label, "score": 1.0, "segment": [0.0, video.duration]}
                              for label in dict.fromkeys(video.labels)]
                        for vid, video in ground_truth.videos.items()}}


def test_training_beats_the_whole_video_baseline(synthetic):
    train, test = datasets(synthetic, SMALL.model.tscale)
    task = ETADTask(SMALL.model, train, test, classifier=synthetic / "classifier.json")
    config = replace(SMALL.train, eval_every=0)  # 20 epochs of 6 steps, lr x0.1 after 15
    model, history = engine.fit(task, config, progress=False, log=None)
    assert len(history) == config.epochs and history[-1]["loss"] < 0.6 * history[0]["loss"]

    scores = engine.evaluate(task, model)
    baseline = detection_map(test.ground_truth, whole_video_baseline(test.ground_truth), subset=None)
    # measured (seed 0, torch 2.13 CPU): trained 34.0 average mAP (39.9 at 0.5), AR@10 84.6; baseline 0.0
    # (the synthetic actions span 5-40% of their video: a whole-video proposal never reaches tIoU 0.5)
    assert baseline.average_map == 0.0
    assert scores["average_mAP"] > 25.0 and scores["mAP@0.50"] > 30.0
    assert scores["AR@10"] > 70.0


def test_cli_train_then_eval_writes_submissions(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--preset", "small", "--data", str(synthetic), "--out", str(run), "--no-progress"]
    assert main(["etad", "train", *common, "--epochs", "2", "--eval-every", "0"]) == 0
    assert (run / engine.CHECKPOINT).is_file()
    assert main(["etad", "eval", *common]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert record["model"] == "etad" and record["subset"] == "validation"

    gt = read_ground_truth(synthetic / "annotations.json", subset="validation")
    detections = json.loads((run / "detections.json").read_text())
    assert set(detections) == {"version", "results", "external_data"} and set(detections["results"]) == set(gt.videos)
    top = SMALL.model.class_topk
    for entries in detections["results"].values():
        assert 0 < len(entries) <= SMALL.model.max_proposals * top
        assert all(set(e) == {"label", "score", "segment"} and 0 <= e["segment"][0] <= e["segment"][1] for e in entries)
    proposals = json.loads((run / "proposals.json").read_text())["results"]
    assert all(len(detections["results"][v]) == top * len(p) for v, p in proposals.items())

    expected = detection_map(gt, run / "detections.json", subset="validation")
    assert record["average_mAP"] == pytest.approx(100 * expected.average_map, abs=1e-9)
    assert record["mAP@0.95"] == pytest.approx(100 * expected.map[-1], abs=1e-9)
    assert f"average_mAP={record['average_mAP']:.2f}" in capsys.readouterr().out

    # a missing annotations file is named (end-to-end mode and THUMOS windows: test_etad_e2e_cli.py,
    # test_etad_windows.py)
    assert main(["etad", "eval", "--preset", "small", "--annotations", str(tmp_path / "nope.json"),
                 "--features", str(synthetic / "features"), "--out", str(tmp_path / "r2")]) == 2
    assert "nope.json" in capsys.readouterr().err


# ---- end-to-end mode ------------------------------------------------------------------------------

# a tiny R(2+1)D in the released setting (stem, layer1, layer2 frozen; BatchNorm in eval mode)
TINY_BACKBONE = R2Plus1DConfig(layers=(1, 1, 1, 1), widths=(4, 6, 8, 8), stem_width=3, frozen_stages=2,
                               norm_eval=True)
TINY_DETECTOR = ETADConfig(in_channels=8, tscale=8, hidden_dim=32, mid_dim=16, fc_dim=8, roi_size=8,
                           proposal_ratio=0.5, max_proposals=10, class_topk=1)
SNIPPET_FRAMES, CROP = 4, 8


@pytest.fixture(scope="module")
def frame_folders(tmp_path_factory):
    """Two videos of 20 and 27 PNG frames (12x10) with one action each; ground truth and classifier.
    Every pixel of frame k is 5 k (all channels): a snippet's values name its frames."""
    root = tmp_path_factory.mktemp("etad_frames")
    database = {}
    for vid, frames, segment in (("a", 20, [2.0, 9.0]), ("b", 27, [10.0, 25.0])):
        values = np.broadcast_to(5 * np.arange(frames, dtype=np.uint8)[:, None, None, None], (frames, 10, 12, 3))
        write_frames(root / "frames" / vid, np.ascontiguousarray(values), ext="png")
        database[vid] = {"subset": "training", "duration": float(frames),
                         "annotations": [{"segment": segment, "label": "jump"}]}
    (root / "annotations.json").write_text(json.dumps({"database": database}))
    (root / "classifier.json").write_text(json.dumps({"results": {"a": [0.9], "b": [0.8]}, "class": ["jump"]}))
    return root


def test_snippet_dataset_reads_evenly_spaced_snippets(frame_folders):
    data = SnippetDataset(frame_folders / "annotations.json", frame_folders / "frames", "training",
                          snippets=TINY_DETECTOR.tscale, snippet_frames=SNIPPET_FRAMES, short_side=CROP,
                          crop_size=CROP)
    sample = data[1]
    assert sample.features.shape == (TINY_DETECTOR.tscale, 3, SNIPPET_FRAMES, CROP, CROP)
    assert sample.video_id == "b" and sample.segments.flatten().tolist() == pytest.approx([10 / 27, 25 / 27])
    # 27 frames, 8 snippets of 4: starts int((27 - 4 + 1) / 8 * (t + 0.5)), then 4 consecutive frames
    assert snippet_starts(27, 8, 4).tolist() == [1, 4, 7, 10, 13, 16, 19, 22]
    assert snippet_starts(2, 3, 4).tolist() == [0, 0, 0]  # shorter than a snippet: frames repeat
    frame = torch.tensor([1, 4, 7, 10, 13, 16, 19, 22]).view(-1, 1) + torch.arange(SNIPPET_FRAMES)  # [T, L]
    mean, std = torch.tensor(KINETICS_MEAN).view(1, 3, 1), torch.tensor(KINETICS_STD).view(1, 3, 1)
    expected = (5.0 * frame[:, None, :] / 255 - mean) / std  # [T, 3, L]
    torch.testing.assert_close(sample.features, expected[..., None, None].expand_as(sample.features))


def test_e2e_task_one_step(frame_folders):
    data = SnippetDataset(frame_folders / "annotations.json", frame_folders / "frames", "training",
                          snippets=TINY_DETECTOR.tscale, snippet_frames=SNIPPET_FRAMES, short_side=CROP,
                          crop_size=CROP)
    ratio, lr, scale = 0.5, 1e-2, 1e-3
    task = ETADEndToEndTask(TINY_DETECTOR, data, data, classifier=frame_folders / "classifier.json",
                            backbone=TINY_BACKBONE, ratio=ratio, backbone_lr_scale=scale)
    built = []
    build = task.build_model

    def recording_build():
        """The task's model, with a hook recording how many snippets each backbone call gets with autograd on."""
        model = build()
        calls = []
        model.encoder.backbone.register_forward_pre_hook(
            lambda module, args: calls.append(args[0].shape[0]) if torch.is_grad_enabled() else None)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        built.append((model, calls, before))
        return model

    task.build_model = recording_build
    config = replace(SMALL.train, epochs=1, batch_size=2, lr=lr, weight_decay=0.0, eval_every=0)
    model, history = engine.fit(task, config, progress=False, log=None)
    (_, calls, before), = built
    assert np.isfinite(history[0]["loss"])

    # the backbone ran with autograd on only for the sampled snippets: 4 of 8 per video, one chunk each
    per_video = sampled_snippets(TINY_DETECTOR.tscale, ratio)
    assert per_video == 4 and calls == [per_video, per_video]

    backbone = model.encoder.backbone
    frozen = {id(p) for m in backbone.frozen_modules() for p in m.parameters()}
    norms = {id(p) for m in backbone.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
    moved = {}
    for name, p in model.named_parameters():
        moved[name] = float((p.detach() - before[name]).abs().max())
        if id(p) in frozen or id(p) in norms:
            assert moved[name] == 0.0, name
    trained = [moved[n] for n, p in model.encoder.named_parameters(prefix="encoder")
               if id(p) not in frozen and id(p) not in norms]
    detector = [moved[n] for n, _ in model.detector.named_parameters(prefix="detector")]
    # AdamW's first step moves each coordinate by lr * |g| / (|g| + eps) <= lr (1%: float32 rounding of the
    # parameters, whose ulp is ~1e-8 here)
    assert trained and 0.5 * lr * scale < max(trained) <= 1.01 * lr * scale
    assert 0.5 * lr < max(detector) <= 1.01 * lr

    scores = engine.evaluate(task, model)  # encoder in eval mode: every snippet, no autograd
    assert calls == [per_video, per_video]
    assert set(scores) >= {"average_mAP", "AR@1", "AR_AUC"} and all(np.isfinite(v) for v in scores.values())

    with pytest.raises(ValueError, match="in_channels"):
        ETADEndToEndTask(replace(TINY_DETECTOR, in_channels=16), data, backbone=TINY_BACKBONE)


def test_bench_suite_backends_compute_the_same_calls():
    """``python -m fastlocal bench --ops etad``'s calls (tiny configurations): both backends give the same
    outputs, so the table compares equal work; the post-processing keeps max_proposals x top-2 entries."""
    from fastlocal.bench.etad import ETADSuite

    suite = ETADSuite()
    for config in suite.tiny_configs:
        for mode in suite.modes:
            if suite.skip_reason("fastlocal[cpu]", config, mode):
                assert config.part == "post" and mode == "forward_backward"
                continue
            cpu, ref = (suite.call(method, config, mode)() for method in suite.methods)
            for a, b in zip(cpu, ref, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            if config.part == "post":
                assert cpu[0].shape == (PRESETS["small"].model.max_proposals * 2,)
