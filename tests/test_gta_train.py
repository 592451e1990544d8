"""GTA on the engine: a tiny R2D + GTA learns motion direction on the synthetic Something-Something set
(far above the TSN average-pooling baseline trained with the same budget); ``python -m fastlocal.models gta
train|eval|info`` end to end on v1 label files; the paper line of ``info``; clear errors for missing data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastlocal.models import engine
from fastlocal.models.cli import main, multiply_adds
from fastlocal.models.configs import replace
from fastlocal.models.gta import GTA, PRESETS, SPEC, TINY_PRESETS, GTATask

from fastlocal.data import SomethingClips, SomethingViews
from fastlocal.data.something import read_class_names, read_split
from fastlocal.data.synthetic_something import CLASSES, generate
from fastlocal.data.synthetic_video import SyntheticVideoSpec

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TINY_PRESETS["gta-tiny"]


def cli(args: list[str]) -> int:
    return main(["gta", *args])


def test_tiny_gta_learns_motion_direction_and_beats_tsn_average_pooling(tmp_path):
    """The six classes are three pairs of time reversals (up/down, left/right, towards/away), so a TSN
    (the same tiny R2D, no GTA block: per-frame features averaged over time) sees at most the pair:
    1/2 of the videos in expectation. GTA-tiny, trained with the same clips, steps and optimiser, tells
    the directions apart on held-out videos (single centre view, as the paper tests)."""
    root = generate(tmp_path / "ss", SyntheticVideoSpec(videos=128, frames=24, height=36, width=48,
                                                        formats=("frames",), seed=0))
    config = replace(TINY.model, num_classes=len(CLASSES))
    train = replace(TINY.train, epochs=30, eval_every=0)
    spec = train.something_spec(config.frames, config.image_size)
    clips = SomethingClips(root / "frames", root, "train", spec)
    views = SomethingViews(root / "frames", root, "validation", spec)
    scores = {}
    for block in ("gta", "none"):
        task = GTATask(replace(config, block=block), clips, views)
        model, history = engine.fit(task, train, progress=False, log=None)
        assert len(history) == train.epochs and history[-1]["loss"] < history[0]["loss"]
        assert len(model.temporal_blocks()) == (2 if block == "gta" else 0)
        scores[block] = engine.evaluate(task, model)
    gta, tsn = scores["gta"], scores["none"]
    print(f"video top-1: GTA-tiny {gta['video_top1']:.1f}, TSN average pooling {tsn['video_top1']:.1f} "
          f"on {gta['videos']} videos")
    assert gta["videos"] == tsn["videos"] == len(views) == 32 and gta["clips"] == 32  # one view per video
    assert gta["video_top1"] >= 80.0  # chance: 16.7
    assert tsn["video_top1"] <= 55.0  # the pair at best (50 expected)
    assert gta["video_top1"] >= tsn["video_top1"] + 30.0


# ---- command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1_set(tmp_path_factory) -> Path:
    """Something-Something v1 layout: CSV label files beside ``frames/<id>/``."""
    spec = SyntheticVideoSpec(videos=12, frames=12, height=36, width=48, formats=("frames",), seed=1)
    return generate(tmp_path_factory.mktemp("gta_cli") / "ss", spec, version=1)


def test_cli_train_eval(v1_set, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--preset", "gta-tiny", "--data", str(v1_set), "--out", str(run), "--no-progress"]
    assert cli(["train", *common, "--epochs", "1", "--batch-size", "4", "--segments", "2"]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss", "train_top1", "eval_video_top1", "eval_clip_top5"} <= record.keys()
    stored = json.loads((run / "config.json").read_text())
    assert stored["model"] == "gta" and stored["model_config"]["num_classes"] == 6  # the labels file's
    assert stored["model_config"]["frames"] == 2  # --segments

    capsys.readouterr()
    assert cli(["eval", *common]) == 0
    assert "video_top1=" in capsys.readouterr().out
    scores = json.loads((run / "eval.json").read_text())
    val = read_split(v1_set / "something-something-v1-validation.csv",
                     read_class_names(v1_set / "something-something-v1-labels.csv"))
    assert scores["version"] == 1 and scores["split"].endswith("something-something-v1-validation.csv")
    assert scores["videos"] == scores["clips"] == len(val) == 6
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5"):
        assert 0 <= scores[key] <= 100
    videos = json.loads((run / "predictions.json").read_text())
    assert [(v["video"], v["label"]) for v in videos] == [(e.id, e.label) for e in val]
    names = sorted(CLASSES)  # v1 indices: sorted class names
    assert all(v["label_name"] == names[v["label"]] and len(v["top5"]) == 5 and v["top5"][0] == v["pred"]
               for v in videos)
    assert scores["video_top1"] == 100.0 * np.mean([v["pred"] == v["label"] for v in videos])
    assert scores["video_top5"] == 100.0 * np.mean([v["label"] in v["top5"] for v in videos])
    # the evaluated model is the checkpoint's: 2 frames per clip
    model = GTA(replace(TINY.model, num_classes=6, frames=2))
    model.load_state_dict(engine.load_checkpoint(run / engine.CHECKPOINT)["model"])


def test_cli_info_prints_the_paper_line(capsys):
    """On a cheap variant of ``r2d50`` (2 frames of 32^2): the parameters and multiply-adds ``info`` measures,
    and Table 1's line for the preset."""
    assert cli(["info", "--preset", "r2d50", "--set", "image_size=32", "--set", "frames=2"]) == 0
    out = capsys.readouterr().out
    config = replace(PRESETS["r2d50"].model, image_size=32, frames=2)
    torch.manual_seed(0)
    model = GTA(config).eval()
    macs, _ = multiply_adds(model, (torch.randn(1, 3, 2, 32, 32),))
    assert f"parameters: {sum(p.numel() for p in model.parameters()):,}" in out
    assert f"multiply-adds of one sample (one clip of frames x image_size^2 (8 x 224^2 for the paper's presets)): " \
           f"{macs:,}" in out
    assert "paper (He et al., BMVC 2021, Table 1; 8 x 224^2, 174 classes): 23.9 M parameters, 32.7 GFLOPs" in out
    assert "this preset: 23.86 M parameters (-0.15%)" in out  # 23,864,558


def test_published_lines():
    (line,) = SPEC.published("r2d50-gta")
    assert "31.2 M parameters, 50.2 GFLOPs per clip" in line and "31.26 M parameters (+0.20%)" in line  # 31,261,934
    (line,) = SPEC.published("r2d50-nl")
    assert "31.2 M parameters, 61.1 GFLOPs" in line and "31.22 M parameters (+0.07%)" in line  # 31,223,022
    assert SPEC.published("gta-tiny") == [
        "paper: no published budget for gta-tiny (Table 1 gives r2d50, r2d50-nl and r2d50-gta at 8 x 224^2)"]


def test_cli_errors(v1_set, tmp_path, capsys):
    out = ["--out", str(tmp_path / "r")]
    missing = tmp_path / "missing"
    assert cli(["train", "--preset", "gta-tiny", "--data", str(missing), *out]) == 2
    assert f"annotations directory not found: {missing}" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["train", "--preset", "gta-tiny", "--data", str(empty), *out]) == 2
    assert "must hold exactly one of something-something-v1-labels.csv or something-something-v2-labels.json" \
        in capsys.readouterr().err
    common = ["--preset", "gta-tiny", "--data", str(v1_set), *out]
    assert cli(["train", *common, "--version", "2"]) == 2
    assert f"labels file not found: {v1_set / 'something-something-v2-labels.json'}" in capsys.readouterr().err
    assert cli(["train", *common, "--segments", "0"]) == 2
    assert "--segments must be >= 1" in capsys.readouterr().err
    assert cli(["eval", *common]) == 2
    assert "no weights to evaluate" in capsys.readouterr().err
    # frame folders elsewhere than DATA/frames: --frames; a listed video without its folder is named
    bare = tmp_path / "bare"
    shutil.copytree(v1_set, bare, ignore=shutil.ignore_patterns("frames"))
    assert cli(["train", "--preset", "gta-tiny", "--data", str(bare), *out, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "frame folder of video" in err and "something-something-v1-train.csv" in err and str(bare) in err
    assert cli(["train", "--preset", "gta-tiny", "--data", str(bare), "--frames", str(v1_set / "frames"), *out,
                "--epochs", "1", "--set", "eval_every=0", "--no-progress"]) == 0


# ---- benchmark suite ---------------------------------------------------------------------------------


def test_bench_suite_is_opt_in_and_its_methods_agree():
    """``python -m fastlocal bench --ops gta`` only (not in the default ops); on the tiny configurations the
    block and its transcription give the same output and gradients, and a model step a finite loss."""
    from fastlocal.bench.gta import GTASuite, gta_block
    from fastlocal.bench.ops import MODEL_SUITES, SUITES

    assert "gta" in MODEL_SUITES and "gta" not in SUITES
    suite = GTASuite()
    model, module = suite.tiny_configs
    assert suite.skip_reason("transcription", model, "forward") == \
        "the transcription is of the GTA block alone (see the module rows)"
    for mode in ("forward", "forward_backward"):
        ours, theirs = (suite.build(method, module, mode)() for method in suite.methods)
        # forward: the output; forward_backward: the gradients of the input and of every weight of the block
        assert len(ours) == (1 if mode == "forward" else 1 + len(list(gta_block(module).parameters())))
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        (loss,) = suite.build("fastlocal", model, mode)()
        assert torch.isfinite(loss).all()
