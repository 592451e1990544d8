"""fastlocal.data.detection (ground truth, submissions, features, DetectionDataset) and the
synthetic detection generator."""

from __future__ import annotations

import itertools
import json
import math
import sys

import h5py
import numpy as np
import pytest
import torch

from fastlocal.data import DatasetError
from fastlocal.data.detection import (
    DetectionDataset,
    collate_detection,
    read_feature_file,
    read_ground_truth,
    read_predictions,
    rescale_features,
    write_predictions,
)
from fastlocal.data.synthetic_detection import SyntheticDetectionSpec, generate, main
from fastlocal.metrics import detection_map

SMALL = SyntheticDetectionSpec(videos=10, classes=3, dim=6, min_length=24, max_length=60, seed=2)


@pytest.fixture
def synthetic(tmp_path):
    return generate(tmp_path / "syn", SMALL)


def _anet():
    return {"version": "VERSION 1.3", "taxonomy": [], "database": {
        "vidA": {"subset": "validation", "duration": 20.0, "resolution": "", "url": "", "annotations": [
            {"segment": [1.0, 5.5], "label": "Run"}, {"segment": [6, 9], "label": "Jump"}]},
        "vidB": {"subset": "training", "duration": 10.0, "annotations": [{"segment": [0, 10], "label": "Swim"}]},
        "vidC": {"subset": "validation", "duration": 8.0, "annotations": []},
    }}


# ----------------------------------------------------------------------------- ground truth


def test_ground_truth_activitynet_layout(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_anet()))
    gt = read_ground_truth(path)
    assert list(gt.videos) == ["vidA", "vidB", "vidC"] and gt.classes == ["Run", "Jump", "Swim"]
    assert gt.source == str(path) and gt.num_instances == 3
    a = gt.videos["vidA"]
    assert a.subset == "validation" and a.duration == 20.0 and a.labels == ("Run", "Jump")
    np.testing.assert_array_equal(a.segments, [[1.0, 5.5], [6.0, 9.0]])
    assert a.segments.dtype == np.float64 and gt.videos["vidC"].segments.shape == (0, 2)
    val = read_ground_truth(_anet(), subset="validation", blocked=["vidC"])
    assert list(val.videos) == ["vidA"] and val.classes == ["Run", "Jump"]
    assert list(read_ground_truth(gt, subset=["training", "validation"], blocked="vidA").videos) == ["vidB", "vidC"]


def test_ground_truth_thumos_variants():
    # G-TAD's thumos_gt.json: only "database", segments as strings, no duration
    gtad = {"database": {"video_test_0000004": {"subset": "test", "annotations": [
        {"segment": ["0.2", "1.1"], "label": "CricketBowling"}, {"segment": ["1.0", "2.5"], "label": "Ambiguous"}]}}}
    gt = read_ground_truth(gtad, subset="test")
    np.testing.assert_array_equal(gt.videos["video_test_0000004"].segments, [[0.2, 1.1], [1.0, 2.5]])
    assert gt.videos["video_test_0000004"].duration is None
    no_ambiguous = read_ground_truth(gtad, ignore_labels=("Ambiguous",))
    assert no_ambiguous.classes == ["CricketBowling"] and no_ambiguous.num_instances == 1
    # a bare database mapping (no top-level keys at all)
    bare = read_ground_truth(gtad["database"])
    assert bare.classes == ["CricketBowling", "Ambiguous"]
    # TALLFormer's txt2json layout: taxonomy [] and version "THUMOS14", duration = frames / fps
    tall = {"database": {"v": {"annotations": [{"segment": [1, 2], "label": "X"}], "duration": 3.5,
                               "resolution": "", "subset": "val"}}, "taxonomy": [], "version": "THUMOS14"}
    assert read_ground_truth(tall, subset="val").videos["v"].duration == 3.5


def test_ground_truth_out_of_range_policies():
    data = {"database": {"v": {"subset": "s", "duration": 10.0, "annotations": [
        {"segment": [2, 4], "label": "a"}, {"segment": [8, 12.5], "label": "b"}, {"segment": [-1, 3], "label": "a"}]}}}
    with pytest.raises(DatasetError, match=r"<dict>: video 'v', annotation 1: segment \[8.0, 12.5\] lies outside "
                                           r"the video \[0, 10.0\]"):
        read_ground_truth(data)
    clipped = read_ground_truth(data, out_of_range="clip").videos["v"]
    np.testing.assert_array_equal(clipped.segments, [[2, 4], [8, 10], [0, 3]])
    dropped = read_ground_truth(data, out_of_range="drop").videos["v"]
    assert dropped.labels == ("a",) and dropped.segments.tolist() == [[2, 4]]
    assert read_ground_truth(data, out_of_range="keep").videos["v"].segments[1].tolist() == [8, 12.5]
    with pytest.raises(ValueError, match="out_of_range must be one of"):
        read_ground_truth(data, out_of_range="ignore")


@pytest.mark.parametrize(("text", "message"), [
    ('{"database": {"v": {"annotations": [}}', r"gt.json:1:\d+: malformed JSON in the ground truth"),
    ("[1, 2]", "the ground truth must be a JSON object, got a list"),
    ('{"version": 1}', r"not a ground-truth file: no 'database' key"),
    ('{"database": {"v": {"annotations": [{"segment": [3, 1], "label": "a"}]}}}',
     r"video 'v', annotation 0: segment \[3, 1\] ends before it starts"),
    ('{"database": {"v": {"annotations": [{"segment": ["x", 1], "label": "a"}]}}}',
     r"video 'v', annotation 0: segment start must be a number, got 'x'"),
    ('{"database": {"v": {"annotations": [{"segment": [1], "label": "a"}]}}}', r"'segment' must be \[start, end\]"),
    ('{"database": {"v": {"annotations": [{"segment": [0, 1]}]}}}', r"video 'v', annotation 0: missing 'label'"),
    ('{"database": {"v": {"duration": 0, "annotations": []}}}', r"video 'v': duration must be > 0"),
    ('{"database": {"v": {"annotations": [{"segment": [0, NaN], "label": "a"}]}}}', "segment end must be finite"),
])
def test_ground_truth_errors_name_file_and_video(tmp_path, text, message):
    path = tmp_path / "gt.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_ground_truth(path)


def test_ground_truth_missing_file_unknown_label_and_types(tmp_path):
    with pytest.raises(DatasetError, match=r"ground truth not found: .*nope\.json"):
        read_ground_truth(tmp_path / "nope.json")
    with pytest.raises(DatasetError, match=r"video 'vidA', annotation 1: unknown label 'Jump' \(not among the 2 given"):
        read_ground_truth(_anet(), classes=["Run", "Swim"])
    with pytest.raises(TypeError, match="ground truth must be a JSON file path or a dict"):
        read_ground_truth(42)
    with pytest.raises(TypeError, match="blocked must hold strings"):
        read_ground_truth(_anet(), blocked=[1])


# ----------------------------------------------------------------------------- predictions


def test_predictions_round_trip(tmp_path):
    results = {
        "vidA": [{"label": "Run", "score": np.float32(0.5), "segment": [torch.tensor(1.0), np.float64(2.5)]},
                 {"label": "Jump", "score": 0.25, "segment": (3, 4)}],
        "vidD": [],
    }
    path = write_predictions(tmp_path / "sub.json", results, external_data={"used": False})
    doc = json.loads(path.read_text())
    assert doc["version"] == "VERSION 1.3" and doc["external_data"] == {"used": False}
    assert doc["results"]["vidA"][0] == {"label": "Run", "score": 0.5, "segment": [1.0, 2.5]}
    pred = read_predictions(path)
    assert pred.videos == ["vidA", "vidD"] and len(pred) == 2 and pred.labels == ["Run", "Jump"]
    np.testing.assert_array_equal(pred.video_index, [0, 0])
    np.testing.assert_array_equal(pred.segments, [[1.0, 2.5], [3.0, 4.0]])
    np.testing.assert_array_equal(pred.scores, [0.5, 0.25])
    assert pred.scores.dtype == np.float64
    # integer scores stay int64 (the dtype pandas gives the official sort); proposals need no label
    ints = read_predictions({"results": {"v": [{"score": 2, "segment": [0, 1]}, {"score": 1, "segment": [1, 2]}]}},
                            labels=False)
    assert ints.scores.dtype == np.int64 and ints.labels is None and ints.label_index is None
    blocked = read_predictions(pred, blocked=["vidA"])
    assert blocked.videos == ["vidD"] and len(blocked) == 0


def test_prediction_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a submission file: no 'results' key"):
        read_predictions({"database": {}})
    with pytest.raises(DatasetError, match=r"video 'v', prediction 0: 'score' must be a finite number, got 'high'"):
        read_predictions({"results": {"v": [{"label": "a", "score": "high", "segment": [0, 1]}]}})
    with pytest.raises(DatasetError, match=r"video 'v', prediction 1: missing 'label'"):
        read_predictions({"results": {"v": [{"label": "a", "score": 1, "segment": [0, 1]},
                                            {"score": 1, "segment": [0, 1]}]}})
    with pytest.raises(DatasetError, match=r"video 'v': expected a list of predictions"):
        read_predictions({"results": {"v": {"score": 1}}})
    with pytest.raises(ValueError, match=r"results\['v'\]\[0\]\['score'\] must be a finite number"):
        write_predictions(tmp_path / "x.json", {"v": [{"label": "a", "score": math.inf, "segment": [0, 1]}]})
    with pytest.raises(ValueError, match="ends before it starts"):
        write_predictions(tmp_path / "x.json", {"v": [{"label": "a", "score": 1.0, "segment": [2, 1]}]})


# ----------------------------------------------------------------------------- features


def test_feature_files(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    out = read_feature_file(tmp_path / "a.npy")
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, x)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["feats"] = x
    np.testing.assert_array_equal(read_feature_file(tmp_path / "one.h5"), x)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"], f["b"] = x, x
    with pytest.raises(DatasetError, match=r"two.h5 \(video 'v'\): expected one dataset in the file"):
        read_feature_file(tmp_path / "two.h5", video="v")
    np.testing.assert_array_equal(read_feature_file(tmp_path / "two.h5", key="b"), x)
    with pytest.raises(DatasetError, match="no dataset 'c'"):
        read_feature_file(tmp_path / "two.h5", key="c")
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2.0], [np.nan, 0.0]]))
    with pytest.raises(DatasetError, match=r"nan\.npy: features hold NaN or inf \(first at time step 1\)"):
        read_feature_file(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(DatasetError, match=r"flat.npy: features must be a \[T, C\] array .* got shape \(5,\)"):
        read_feature_file(tmp_path / "flat.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-8])
    with pytest.raises(DatasetError, match=r"cut\.npy is truncated"):
        read_feature_file(tmp_path / "cut.npy")
    with pytest.raises(DatasetError, match=r"features file not found: .*gone.npy \(video 'g'\)"):
        read_feature_file(tmp_path / "gone.npy", video="g")


def test_h5_extra_missing_names_the_install(tmp_path, monkeypatch):
    (tmp_path / "f.h5").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastlocal\[h5\]'"):
        read_feature_file(tmp_path / "f.h5")


def _rescale_oracle(x: np.ndarray, length: int) -> np.ndarray:
    """torchvision's aligned roi_align on [C, T, 1] with the box (0, 0, 1, T), written as 1-D loops."""
    C, T = x.shape
    bin_size = T / length
    n = math.ceil(T / length)
    out = np.zeros((C, length))
    for i in range(length):
        for s in range(n):
            y = -0.5 + i * bin_size + (s + 0.5) * bin_size / n
            if y < -1 or y > T:
                continue
            y = max(y, 0.0)
            lo = int(y)
            if lo >= T - 1:
                out[:, i] += x[:, T - 1]
            else:
                out[:, i] += (1 - (y - lo)) * x[:, lo] + (y - lo) * x[:, lo + 1]
        out[:, i] /= n
    return out


@pytest.mark.parametrize(("T", "length"), [(37, 16), (16, 16), (5, 16), (300, 128), (128, 128)])
def test_rescale_features_matches_aligned_roi_align(T, length):
    x = torch.randn(3, T, generator=torch.Generator().manual_seed(T), dtype=torch.float64)
    out = rescale_features(x, length)
    assert out.shape == (3, length) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), _rescale_oracle(x.numpy(), length), rtol=1e-12, atol=1e-12)
    if length == T:  # aligned bins centred on the steps: identity
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
    assert rescale_features(x.float(), length).dtype == torch.float32
    with pytest.raises(ValueError, match=r"features must be \[C, T\]"):
        rescale_features(x[None], length)


# ----------------------------------------------------------------------------- dataset


def test_dataset_on_synthetic(synthetic):
    gt = json.loads((synthetic / "annotations.json").read_text())["database"]
    train = DetectionDataset(synthetic / "annotations.json", synthetic / "features", "training", length=32)
    val = DetectionDataset(synthetic / "annotations.json", synthetic / "features", "validation", length=32)
    assert len(train) + len(val) == SMALL.videos and train.skipped == []
    assert train.classes == val.classes == sorted(train.classes) and train.num_classes == 3
    for ds in (train, val):
        for i in range(len(ds)):
            sample = ds[i]
            entry = gt[sample.video_id]
            assert sample.features.shape == (SMALL.dim, 32) and sample.features.dtype == torch.float32
            assert sample.duration == entry["duration"]
            expected = np.array([a["segment"] for a in entry["annotations"]]) / entry["duration"]
            np.testing.assert_allclose(sample.segments.numpy(), expected, rtol=1e-6)
            assert sample.labels.tolist() == [ds.classes.index(a["label"]) for a in entry["annotations"]]
            raw = np.load(synthetic / "features" / f"{sample.video_id}.npy")
            np.testing.assert_allclose(sample.features.numpy(), _rescale_oracle(raw.T.astype(np.float64), 32),
                                       rtol=1e-5, atol=1e-5)
    batch = collate_detection([train[0], train[1]])
    assert batch["features"].shape == (2, SMALL.dim, 32) and len(batch["segments"]) == 2
    assert batch["video_ids"] == train.video_ids[:2]


def test_dataset_missing_features_h5_and_filters(synthetic, tmp_path):
    annotations, features = synthetic / "annotations.json", synthetic / "features"
    ids = DetectionDataset(annotations, features).video_ids
    (features / f"{ids[3]}.npy").unlink()
    with pytest.raises(DatasetError, match=rf"1 of {SMALL.videos} video\(s\) .* have no features, e.g. video "
                                           rf"'{ids[3]}': .*{ids[3]}.npy \(missing='skip'"):
        DetectionDataset(annotations, features)
    with pytest.warns(UserWarning, match=f"skipped 1 of {SMALL.videos} video"):
        ds = DetectionDataset(annotations, features, missing="skip")
    assert ds.skipped == [ids[3]] and len(ds) == SMALL.videos - 1
    # one .h5 file holding every video, ETAD-style names
    with h5py.File(tmp_path / "all.h5", "w") as f:
        for vid in ds.video_ids:
            f[f"v_{vid}"] = np.load(features / f"{vid}.npy")
    with pytest.warns(UserWarning, match="skipped 1 of"):
        h5 = DetectionDataset(annotations, tmp_path / "all.h5", name_template="v_{video}", missing="skip")
    assert h5.video_ids == ds.video_ids
    torch.testing.assert_close(h5[2].features, ds[2].features)
    # min_action (ETAD's training filter): every video here has an action above 1%, none above 99%
    with pytest.warns(UserWarning, match="skipped 1 of"):
        assert len(DetectionDataset(annotations, features, missing="skip", min_action=0.01)) == len(ds)
    with pytest.raises(DatasetError, match="no video in subset None"):
        DetectionDataset(annotations, features, missing="skip", min_action=0.99)
    with pytest.raises(ValueError, match="name_template must contain"):
        DetectionDataset(annotations, features, name_template="x.npy")
    with pytest.raises(DatasetError, match="features directory not found"):
        DetectionDataset(annotations, tmp_path / "nowhere")
    no_duration = {"database": {"v": {"annotations": [{"segment": [0, 1], "label": "a"}]}}}
    with pytest.raises(DatasetError, match="video 'v' has no 'duration'"):
        DetectionDataset(no_duration, features)


# ----------------------------------------------------------------------------- synthetic generator


def test_synthetic_layout_and_localisation_signal(synthetic):
    data = json.loads((synthetic / "annotations.json").read_text())
    assert set(data) == {"version", "taxonomy", "database"}
    db = data["database"]
    subsets = [e["subset"] for e in db.values()]
    assert subsets.count("validation") == round(SMALL.videos * SMALL.validation) and "training" in subsets
    lengths = set()
    for vid, entry in db.items():
        T = np.load(synthetic / "features" / f"{vid}.npy").shape[0]
        lengths.add(T)
        assert SMALL.min_length <= T <= SMALL.max_length and entry["duration"] == T * SMALL.seconds_per_step
        segs = sorted(a["segment"] for a in entry["annotations"])
        assert 1 <= len(segs) <= SMALL.max_actions
        assert all(0 <= s < e <= entry["duration"] for s, e in segs)
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(segs))  # background between
    assert len(lengths) > 3
    classifier = json.loads((synthetic / "classifier.json").read_text())
    assert classifier["class"] == ["jump", "throw", "dive"] and len(classifier["results"]) == SMALL.videos
    # the ground truth scores 1; one whole-video proposal per (video, present class) scores far less
    truth = {"results": {v: [dict(a, score=1.0) for a in e["annotations"]] for v, e in db.items()}}
    whole = {"results": {v: [{"label": c, "score": 1.0, "segment": [0, e["duration"]]}
                             for c in {a["label"] for a in e["annotations"]}] for v, e in db.items()}}
    assert detection_map(data, truth, subset=None).average_map == 1.0
    assert detection_map(data, whole, subset=None).average_map < 0.3


def test_synthetic_steps_carry_their_class(tmp_path):
    """Steps inside an action are nearest to their class's mean appearance, background steps to
    the background's: the features say where each action is."""
    spec = SyntheticDetectionSpec(videos=6, classes=3, dim=16, min_length=40, max_length=80, noise=0.5, seed=5)
    root = generate(tmp_path, spec)
    db = json.loads((root / "annotations.json").read_text())["database"]
    steps, labels = [], []
    names = ["jump", "throw", "dive"]
    for vid, entry in db.items():
        x = np.load(root / "features" / f"{vid}.npy")
        y = np.full(len(x), 3)  # 3 = background
        for a in entry["annotations"]:
            y[int(a["segment"][0]):int(a["segment"][1])] = names.index(a["label"])
        steps.append(x)
        labels.append(y)
    x, y = np.concatenate(steps), np.concatenate(labels)
    present = [c for c in range(4) if (y == c).any()]
    means = np.stack([x[y == c].mean(0) for c in present])
    nearest = np.array(present)[((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (nearest == y).mean() > 0.9


def test_synthetic_cli_and_spec_errors(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "cli"), "--small", "--seed", "3"]) == 0
    assert "wrote 8 videos (5 classes, 8-D features)" in capsys.readouterr().out
    assert len(list((tmp_path / "cli" / "features").glob("*.npy"))) == 8
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--min-action", "0.5", "--max-action", "0.2"])
    assert "need 0 < min_action <= max_action <= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="videos must be >= 2"):
        SyntheticDetectionSpec(videos=1)
    with pytest.raises(TypeError, match="classes must be an int"):
        SyntheticDetectionSpec(classes=2.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out must be a directory"):
        generate(tmp_path / "file", SMALL)
