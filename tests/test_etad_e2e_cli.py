"""``python -m fastlocal.models etad train|eval --mode e2e``: ETAD end to end from frame folders on a
tiny synthetic set (the detection generator's raw-frames mode), the R(2+1)D from a local checkpoint,
and the one-line errors for missing frames and weights."""

from __future__ import annotations

import json

import pytest
import torch
from fastlocal.models import engine
from fastlocal.models.backbones import R2Plus1D
from fastlocal.models.cli import main
from fastlocal.models.etad.data import e2e_backbone
from fastlocal.models.weights import read_state_dict

from fastlocal.data import read_ground_truth
from fastlocal.data.synthetic_detection import SyntheticDetectionSpec, generate
from fastlocal.metrics import detection_map

pytestmark = pytest.mark.usefixtures("one_thread")

# the tiny backbone (output width 8) and a detector of 8 snippets of 4 frames, cropped to 8 x 8
TINY = ["--backbone", "tiny", "--snippet-frames", "4", "--short-side", "8", "--crop-size", "8"]
DETECTOR = ["--set", "tscale=8", "--set", "hidden_dim=32", "--set", "mid_dim=16", "--set", "fc_dim=8",
            "--set", "roi_size=8", "--set", "proposal_ratio=0.5", "--set", "max_proposals=10", "--set", "class_topk=1"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Three videos of 12-16 frames (8 x 8 PNG), two for training and one for validation, two classes."""
    spec = SyntheticDetectionSpec(videos=3, classes=2, min_length=12, max_length=16, max_actions=2, min_action=0.2,
                                  max_action=0.4, validation=0.34, frame_size=8, seed=1)
    return generate(tmp_path_factory.mktemp("etad_e2e_cli"), spec)


def test_cli_e2e_train_one_step_then_eval(frames, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "r2plus1d_tiny.pt"  # with TSP's key prefix
    torch.save({"features." + k: v for k, v in R2Plus1D(e2e_backbone("tiny")).state_dict().items()}, weights)

    run = tmp_path / "run"
    common = ["--preset", "small", "--mode", "e2e", *TINY, "--data", str(frames), "--out", str(run), "--no-progress"]
    assert main(["etad", "train", *common, *DETECTOR, "--encoder-weights", str(weights), "--encoder-prefix",
                 "features.", "--egs-ratio", "0.5", "--epochs", "1", "--batch-size", "2", "--eval-every", "0"]) == 0
    trained = read_state_dict(run / engine.CHECKPOINT)
    stored = torch.load(weights, weights_only=True)
    # the backbone came from the file: its frozen stem (stages 1-2 frozen, as released) is the file's exactly
    stem = [k for k in stored if k.startswith("features.stem.") and stored[k].is_floating_point()]
    assert stem and all(torch.equal(trained["encoder.backbone." + k[len("features."):]], stored[k]) for k in stem)

    assert main(["etad", "eval", *common]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert record["backbone"] == "tiny" and record["frames"] == str(frames / "frames") and record["egs_ratio"] == 0.3
    gt = read_ground_truth(frames / "annotations.json", subset="validation")
    proposals = json.loads((run / "proposals.json").read_text())["results"]
    assert set(proposals) == set(gt.videos) and all(0 < len(p) <= 10 for p in proposals.values())
    expected = detection_map(gt, run / "detections.json", subset="validation")
    assert record["average_mAP"] == pytest.approx(100 * expected.average_map, abs=1e-9)
    assert f"AR_AUC={record['AR_AUC']:.2f}" in capsys.readouterr().out


def test_cli_e2e_errors_name_the_missing_input(frames, tmp_path, capsys):
    common = ["--preset", "small", "--mode", "e2e", *TINY, "--data", str(frames), "--out", str(tmp_path / "r")]
    assert main(["etad", "train", *common, *DETECTOR, "--frames", str(tmp_path / "no_frames")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--frames" in err and "no_frames" in err
    assert main(["etad", "train", *common, *DETECTOR, "--encoder-weights", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--encoder-weights" in err and "nope.pt" in err
    assert main(["etad", "train", "--preset", "thumos-i3d", "--mode", "e2e", "--data", str(frames), "--out",
                 str(tmp_path / "t")]) == 2
    assert "--mode e2e --preset thumos-i3d" in capsys.readouterr().err
