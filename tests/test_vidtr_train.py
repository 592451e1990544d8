"""VidTr on the engine: a tiny C-VidTr learns the synthetic motion videos (above chance and above a
frame-averaging baseline trained with the same budget); ``python -m fastlocal.models vidtr
train|eval|info`` end to end; the task's batching, predictions, metrics and files; clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastlocal.models import engine
from fastlocal.models.cli import main
from fastlocal.models.configs import replace
from fastlocal.models.vidtr import SPEC, TINY_PRESETS, VidTr, VidTrConfig, VidTrTask, macs_per_view
from fastlocal.models.vidtr.data import Prediction, collate
from torch import nn

from fastlocal.data import KineticsClips, KineticsViews
from fastlocal.data.synthetic_video import CLASSES, SyntheticVideoSpec, generate
from fastlocal.metrics.classification import softmax

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TINY_PRESETS["c-vidtr-tiny"]
# the tiny preset's frame size: short side 32, so clips need no resize
VIDEOS = SyntheticVideoSpec(videos=128, frames=40, height=32, width=40, formats=("frames",), seed=0)


def cli(args: list[str]) -> int:
    return main(["vidtr", *args])


class FrameAveraging(nn.Module):
    """The baseline: a per-frame VidTr of the tiny preset's width and depth (one frame, no pooling),
    its class-token features averaged over the clip's frames, then a linear classifier. It cannot
    see frame order. ``[B, 3, T, S, S] -> [B, num_classes]``."""

    def __init__(self, config: VidTrConfig) -> None:
        super().__init__()
        self.frame = VidTr(replace(config, frames=1, tubelet_size=1, pool_layers=(), pool_keep=()))
        self.head = nn.Linear(config.embed_dim, config.num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = clips.shape
        frames = clips.transpose(1, 2).reshape(B * T, C, 1, H, W)
        return self.head(self.frame.forward_features(frames).reshape(B, T, -1).mean(1))


class FrameAveragingTask(VidTrTask):
    def build_model(self) -> nn.Module:
        return FrameAveraging(self.config)


def test_tiny_c_vidtr_learns_motion_and_beats_frame_averaging(tmp_path):
    """Up/down and grow/shrink are time reversals of each other, so averaging frame features sees at
    most the pair (50%); C-VidTr-tiny trained for 360 steps tells all four classes apart on held-out
    videos. Same data, clips, steps and optimiser for both."""
    root = generate(tmp_path / "videos", VIDEOS)
    config = replace(TINY.model, num_classes=len(CLASSES))
    train = replace(TINY.train, eval_every=0)
    spec = train.clip_spec(config.frames)
    clips = KineticsClips(root / "train_frames.txt", root, spec, num_classes=4)
    views = KineticsViews(root / "val_frames.txt", root, spec, num_classes=4)
    scores = {}
    for name, task_class in (("c-vidtr", VidTrTask), ("frame-averaging", FrameAveragingTask)):
        task = task_class(config, clips, views)
        model, history = engine.fit(task, train, progress=False, log=None)
        assert len(history) == train.epochs and history[-1]["loss"] < history[0]["loss"]
        scores[name] = engine.evaluate(task, model)
    ours, base = scores["c-vidtr"], scores["frame-averaging"]
    print(f"video top-1: C-VidTr-tiny {ours['video_top1']:.1f}, frame averaging {base['video_top1']:.1f} "
          f"(clip top-1 {ours['clip_top1']:.1f} vs {base['clip_top1']:.1f}) on {ours['videos']} videos")
    assert ours["videos"] == base["videos"] == 32 and ours["clips"] == 64
    assert ours["video_top1"] >= 80.0 and ours["clip_top1"] >= 75.0  # chance: 25
    assert base["video_top1"] <= 50.0  # the pair at best
    assert ours["video_top1"] >= base["video_top1"] + 30.0


# ---- the task ------------------------------------------------------------------------------------


def test_collate_and_predict_group_views_by_video():
    torch.manual_seed(0)
    config = replace(TINY.model, num_classes=3)
    items = [(torch.randn(4, 3, 8, 32, 32), 2, "a"), (torch.randn(4, 3, 8, 32, 32), 0, "b")]
    batch = collate(items)
    assert batch.clips.shape == (8, 3, 8, 32, 32) and batch.labels.tolist() == [2] * 4 + [0] * 4
    assert batch.names == ["a"] * 4 + ["b"] * 4
    model = VidTr(config).eval()
    task = VidTrTask(config, chunk=3)  # 8 views in chunks of 3, 3 and 2
    with torch.no_grad():
        records = task.predict(model, batch)
        whole = model(batch.clips)
    assert [(r.name, r.label, r.logits.shape) for r in records] == [("a", 2, (4, 3)), ("b", 0, (4, 3))]
    np.testing.assert_allclose(np.concatenate([r.logits for r in records]), whole.numpy(), rtol=1e-5, atol=1e-6)
    train_batch = collate([(torch.randn(3, 8, 32, 32), 1, "c")])
    assert train_batch.clips.shape == (1, 3, 8, 32, 32) and train_batch.labels.tolist() == [1]
    loss, logs = task.loss(model, train_batch)
    expected = -torch.log_softmax(model(train_batch.clips), -1)[0, 1]
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5) and 0 <= logs["train_top1"] <= 100


def test_score_and_write_average_softmax_per_video(tmp_path):
    """Video level: the softmax of the views averaged, then ranked (the released evaluation); the
    written top-5 and scores are those averages."""
    logits = [np.array([[2.0, 0.0, 0.0], [0.0, 0.1, 0.0]]),  # views disagree: mean softmax picks class 0
              np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])]
    records = [Prediction("v0", 1, logits[0]), Prediction("v1", 2, logits[1])]
    task = VidTrTask(replace(TINY.model, num_classes=3), classes=["x", "y", "z"])
    scores = task.score(records)
    assert scores == {"clip_top1": 75.0, "clip_top5": 100.0, "clips": 4, "video_top1": 50.0, "video_top5": 100.0,
                      "videos": 2}
    task.write(records, tmp_path)
    videos = json.loads((tmp_path / "predictions.json").read_text())
    mean0 = softmax(logits[0]).mean(0)
    assert videos[0]["video"] == "v0" and videos[0]["label_name"] == "y" and videos[0]["pred_name"] == "x"
    assert videos[0]["top5"] == list(np.argsort(-mean0)) and videos[0]["views"] == 2
    np.testing.assert_allclose(videos[0]["scores"], np.sort(mean0)[::-1], rtol=1e-12)
    confusion = json.loads((tmp_path / "confusion.json").read_text())
    assert confusion["classes"] == ["x", "y", "z"]
    assert confusion["video"] == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert confusion["clip"] == [[0, 0, 0], [1, 1, 0], [0, 0, 2]]


def test_task_arguments_are_checked():
    config = replace(TINY.model, num_classes=3)
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        VidTrTask(config, chunk=0)
    with pytest.raises(ValueError, match="classes holds 2 names, but the model has num_classes=3"):
        VidTrTask(config, classes=["a", "b"])
    with pytest.raises(ValueError, match="no training set"):
        VidTrTask(config).train_set()


# ---- command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    spec = SyntheticVideoSpec(videos=8, frames=40, height=32, width=40, formats=("frames",), seed=1)
    return generate(tmp_path_factory.mktemp("vidtr_cli") / "videos", spec)


def test_cli_train_eval_info(small_set, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--preset", "c-vidtr-tiny", "--data", str(small_set), "--out", str(run), "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "fastlocal.models", "vidtr", "train", *common, "--epochs", "1"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss", "train_top1", "eval_video_top1", "eval_clip_top5"} <= record.keys()
    stored = json.loads((run / "config.json").read_text())
    assert stored["model"] == "vidtr" and stored["model_config"]["num_classes"] == 4  # from classes.txt

    assert cli(["eval", *common, "--chunk", "1"]) == 0
    assert "video_top1=" in capsys.readouterr().out
    scores = json.loads((run / "eval.json").read_text())
    assert scores["videos"] == 4 and scores["clips"] == 4 * TINY.train.test_clips * TINY.train.test_crops
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5"):
        assert 0 <= scores[key] <= 100
    assert scores["clip_top5"] == scores["video_top5"] == 100.0  # top-5 of 4 classes
    videos = json.loads((run / "predictions.json").read_text())
    val = (small_set / "val_frames.txt").read_text().split()
    assert [v["video"] for v in videos] == val[0::3] and [v["label"] for v in videos] == [int(x) for x in val[2::3]]
    assert all(sorted(v["top5"]) == [0, 1, 2, 3] and v["top5_names"][0] == v["pred_name"] for v in videos)
    assert np.sum(json.loads((run / "confusion.json").read_text())["video"]) == 4
    # eval's top-1 is what the written predictions say
    assert scores["video_top1"] == 100.0 * np.mean([v["pred"] == v["label"] for v in videos])

    assert cli(["info", "--preset", "c-vidtr-tiny"]) == 0
    out = capsys.readouterr().out
    config = TINY.model
    params = sum(p.numel() for p in VidTr(config).parameters())
    assert f"parameters: {params:,}" in out
    assert f"multiply-adds of one sample (one view of frames x image_size^2 (224^2 for the paper's presets)): " \
           f"{macs_per_view(config):,}" in out
    assert "paper: no published count" in out


def test_info_paper_line():
    lines = SPEC.published("c-vidtr-s")
    assert "39 GFLOPs per 224x224 view" in lines[0] and "64.60 G multiply-adds" in lines[0]
    assert "leave out the q/k/v and output projections" in lines[1]


def test_cli_errors(small_set, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert cli(["train", "--preset", "c-vidtr-tiny", "--data", str(missing), "--out", str(tmp_path / "r")]) == 2
    assert f"no video list found: neither {missing / 'train_frames.txt'}" in capsys.readouterr().err
    assert cli(["eval", "--preset", "c-vidtr-tiny", "--data", str(small_set), "--out", str(tmp_path / "r")]) == 2
    assert "no weights to evaluate" in capsys.readouterr().err
    common = ["--preset", "c-vidtr-tiny", "--data", str(small_set), "--out", str(tmp_path / "r")]
    assert cli(["train", *common, "--train-list", "nowhere.txt", "--epochs", "1"]) == 2
    assert f"video list file not found: {small_set / 'nowhere.txt'}" in capsys.readouterr().err
    # labels beyond the class names
    classes = tmp_path / "two.txt"
    classes.write_text("0 up\n1 down\n")
    assert cli(["train", *common, "--classes", str(classes), "--epochs", "1"]) == 2
    assert "is out of range (must be [0, 2))" in capsys.readouterr().err
    # a listed video that is not there
    broken = tmp_path / "broken.txt"
    broken.write_text("frames/nothing 40 0\n")
    assert cli(["train", *common, "--train-list", str(broken), "--set", "eval_every=0", "--epochs", "1"]) == 2
    assert "nothing" in capsys.readouterr().err
