"""ETAD's THUMOS windows (models/etad/windows.py): the window arithmetic worked out by hand, the
window dataset on features whose values name their snippet, the merge across windows, and the
``thumos-*`` presets trained and evaluated end to end on a small synthetic THUMOS-like set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fastlocal.models import engine
from fastlocal.models.cli import main
from fastlocal.models.etad import ETADWindowTask, WindowDataset
from fastlocal.models.etad.windows import clip_to_window, merge_windows, to_video_seconds, window_starts

from fastlocal.data import DetectionDataset, read_ground_truth
from fastlocal.data.synthetic_detection import SyntheticDetectionSpec, generate
from fastlocal.metrics import detection_map
from fastlocal.metrics.detection import THUMOS_TIOU_THRESHOLDS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("snippets", "expected"), [
    (1, [0]), (100, [0]),  # shorter than a window: one window, zero-padded
    (128, [0]),  # exactly one window
    (256, [0, 64, 128]), (192, [0, 64]),  # exact multiples of the stride: the grid reaches the end
    (129, [0, 1]),  # one snippet past the window: a second window aligned to the end
    (200, [0, 64, 72]),  # grid 0, 64 ends at 192: the last window is aligned to the end (200 - 128)
    (300, [0, 64, 128, 172]),
])
def test_window_starts_by_hand(snippets, expected):
    assert window_starts(snippets, 128, 64).tolist() == expected


def test_window_starts_rejects_bad_sizes():
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 0)
    with pytest.raises(TypeError, match="num_snippets"):
        window_starts(10.0, 4, 2)


def test_clip_to_window_by_hand():
    # window [64, 128): [10, 20] outside, [60, 70] 6 of 10 inside, [120, 140] 8 of 20, [80, 90] all, [70, 70] empty
    segments = np.array([[10, 20], [60, 70], [120, 140], [80, 90], [70, 70]], np.float64)
    coverage, clipped = clip_to_window(segments, 64, 64)
    np.testing.assert_allclose(coverage, [0.0, 0.6, 0.4, 1.0, 0.0])
    np.testing.assert_allclose(clipped[1:4], [[0.0, 6 / 64], [56 / 64, 1.0], [16 / 64, 26 / 64]])


def test_to_video_seconds_by_hand():
    # window at snippet 64 of 128 snippets, 0.5 s per snippet, video of 90 s: [0.5, 1] -> [64, 96] s, clipped to 90
    out = to_video_seconds(torch.tensor([[0.5, 1.0], [0.0, 0.25]]), 64, 128, 0.5, 90.0)
    assert out.dtype == torch.float64 and out.tolist() == [[64.0, 90.0], [32.0, 48.0]]


def test_merge_windows_decays_the_duplicate_of_an_overlapping_window():
    # two windows propose [10, 20]: the second copy is decayed by exp(-1 / sigma); [50, 60] overlaps nothing
    segments = torch.tensor([[10.0, 20.0], [50.0, 60.0], [10.0, 20.0]], dtype=torch.float64)
    kept, scores = merge_windows(segments, torch.tensor([0.9, 0.5, 0.8], dtype=torch.float64), sigma=0.35,
                                 max_proposals=10)
    assert kept.tolist() == [[10.0, 20.0], [50.0, 60.0], [10.0, 20.0]]
    np.testing.assert_allclose(scores.numpy(), [0.9, 0.5, 0.8 * math.exp(-1 / 0.35)])
    kept, _ = merge_windows(segments, torch.tensor([0.9, 0.5, 0.8], dtype=torch.float64), sigma=0.35,
                            max_proposals=2)
    assert kept.shape == (2, 2)


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory):
    """Two videos whose feature at snippet t is (t, t + 1000), 2 s per snippet: "long" (200 snippets,
    400 s) and "short" (20 snippets, 40 s), windows of 16 with stride 8."""
    root = tmp_path_factory.mktemp("etad_windows")
    (root / "features").mkdir()
    database = {}
    for vid, n, actions in (
            ("long", 200, [([20.0, 40.0], "a"), ([36.0, 60.0], "b"), ([300.0, 400.0], "a")]),
            ("short", 20, [([4.0, 10.0], "b")])):
        t = np.arange(n, dtype=np.float32)
        np.save(root / "features" / f"{vid}.npy", np.stack([t, t + 1000], axis=1))
        database[vid] = {"subset": "test", "duration": 2.0 * n,
                         "annotations": [{"segment": s, "label": label} for s, label in actions]}
    (root / "annotations.json").write_text(json.dumps({"database": database}))
    return DetectionDataset(root / "annotations.json", root / "features", "test", length=16)


def test_window_dataset_slices_pads_and_keeps_windows_by_hand(by_hand):
    every = WindowDataset(by_hand, window=16)
    # long: N = 200, starts 0, 8, ..., 184 (184 + 16 = 200, exact); short: N = 20 -> 0, then 4 (aligned to the end)
    assert every.num_snippets == [200, 20] and every.stride == 8
    assert every.items == [(0, s) for s in range(0, 185, 8)] + [(1, 0), (1, 4)]

    window = every[every.items.index((0, 8))]
    assert window.video_id == "long" and window.start == 8 and window.snippet_seconds == 2.0
    torch.testing.assert_close(window.features, torch.stack([torch.arange(8.0, 24), torch.arange(1008.0, 1024)]))
    # window [8, 24) snippets = [16, 48) s: action a [10, 20] snippets clipped to [10, 20] -> [2, 12] / 16;
    # action b [18, 30] -> [18, 24] -> [10, 16] / 16; [150, 200] is outside
    torch.testing.assert_close(window.segments, torch.tensor([[2 / 16, 12 / 16], [10 / 16, 1.0]]))
    assert window.labels.tolist() == [0, 1] and window.duration == 400.0

    training = WindowDataset(by_hand, window=16, training=True)
    # kept: windows holding an action > 90% inside. long: window 0 holds 6 of a's 10 snippets [10, 20) (no),
    # window 8 all of a, window 16 all of b [18, 30), window 24 half of b; the 50-snippet action [150, 200)
    # fits no window of 16. short: b [2, 5) lies in window 0; window 4 holds 1 of its 3 snippets (no).
    assert training.items == [(0, 8), (0, 16), (1, 0)]


def test_window_dataset_pads_a_video_shorter_than_the_window(by_hand):
    data = WindowDataset(by_hand, window=32)
    assert data.items[-1] == (1, 0) and data.num_snippets[1] == 20
    window = data[len(data) - 1]
    assert window.features.shape == (2, 32)
    assert window.features[0, :20].tolist() == list(range(20)) and window.features[:, 20:].abs().sum() == 0
    # segments are fractions of the window (32 snippets = 64 s), not of the 40 s video
    torch.testing.assert_close(window.segments, torch.tensor([[2 / 32, 5 / 32]]))


def test_window_task_checks_the_window_size(by_hand):
    from fastlocal.models.etad import PRESETS

    with pytest.raises(ValueError, match="tscale"):
        ETADWindowTask(PRESETS["small"].model, WindowDataset(by_hand, window=16, training=True))


@pytest.fixture(scope="module")
def thumos_like(tmp_path_factory):
    """Long videos (120-200 snippets) with up to 6 short actions (4-10% of the video), 3 classes, 8-D features."""
    spec = SyntheticDetectionSpec(videos=6, classes=3, dim=8, min_length=120, max_length=200, max_actions=6,
                                  min_action=0.04, max_action=0.1, validation=0.34, seconds_per_step=0.5, seed=3)
    return generate(tmp_path_factory.mktemp("etad_thumos"), spec)


def test_cli_thumos_preset_trains_and_evaluates_windows(thumos_like, tmp_path, capsys):
    run = tmp_path / "run"
    # the thumos-tsn preset on windows of 32 snippets (stride 16) with a small detector
    small = ["--set", "tscale=32", "--set", "hidden_dim=32", "--set", "mid_dim=16", "--set", "fc_dim=8",
             "--set", "roi_size=8", "--set", "proposal_ratio=0.1", "--set", "max_proposals=20"]
    common = ["--preset", "thumos-tsn", "--data", str(thumos_like), "--out", str(run), "--no-progress"]
    assert main(["etad", "train", *common, *small, "--epochs", "1", "--batch-size", "8", "--eval-every", "0"]) == 0
    assert main(["etad", "eval", *common]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert [k for k in record if k.startswith("mAP@")] == [f"mAP@{t:.2f}" for t in THUMOS_TIOU_THRESHOLDS]
    assert f"average_mAP={record['average_mAP']:.2f}" in capsys.readouterr().out

    gt = read_ground_truth(thumos_like / "annotations.json", subset="validation")
    detections = json.loads((run / "detections.json").read_text())["results"]
    assert set(detections) == set(gt.videos)
    for vid, entries in detections.items():
        ends = [e["segment"][1] for e in entries]
        assert 0 < len(entries) <= 200 * 2 and all(0 <= e["segment"][0] <= e["segment"][1] for e in entries)
        duration = gt.videos[vid].duration
        # mapped back to the whole video: proposals beyond the first window (32 snippets = 16 s), none past the end
        assert max(ends) <= duration + 1e-9 and max(ends) > 16.0
    expected = detection_map(gt, run / "detections.json", THUMOS_TIOU_THRESHOLDS, subset="validation")
    assert record["average_mAP"] == pytest.approx(100 * expected.average_map, abs=1e-9)
    assert record["mAP@0.30"] == pytest.approx(100 * expected.map[0], abs=1e-9)


def test_window_task_merges_each_video_once(thumos_like):
    """Evaluation through the engine: one merged prediction per video, at most video_proposals each."""
    from fastlocal.models.etad import PRESETS

    config = PRESETS["small"].model.replace(in_channels=8, tscale=32, max_proposals=10)
    test = WindowDataset(DetectionDataset(thumos_like / "annotations.json", thumos_like / "features", "validation",
                                          length=32, out_of_range="keep"), window=32)
    task = ETADWindowTask(config, None, test, video_proposals=15, thresholds=THUMOS_TIOU_THRESHOLDS)
    torch.manual_seed(0)
    model = task.build_model().eval()
    batch = task.collate([test[i] for i in range(len(test))])
    with torch.no_grad():
        records = task.predict(model, batch)
    assert len(records) == len(test) > len(test.video_ids)
    merged = task.merge(records)
    assert [m.video_id for m in merged] == test.video_ids
    for m in merged:
        # the kept proposals come from the union of the video's windows, as many as it has up to 15
        union = {tuple(s) for r in records if r.video_id == m.video_id for s in r.segments.tolist()}
        assert len(m.proposals) == min(15, sum(len(r.scores) for r in records if r.video_id == m.video_id))
        assert {tuple(p["segment"]) for p in m.proposals} <= union
    assert set(engine.evaluate(task, model)) == {"AR@1", "AR@10", "AR@15", "AR_AUC"}
