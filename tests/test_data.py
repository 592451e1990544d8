"""fastlocal.data: the MS-TCN layout reader and the synthetic generator."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fastlocal.data import DatasetError, MSTCNDataset, read_bundle, read_labels, read_mapping
from fastlocal.data.synthetic import SyntheticSpec, generate, main
from fastlocal.metrics import segments

SMALL = SyntheticSpec(videos=6, min_length=40, max_length=90, classes=8, dim=8, splits=2, seed=1)


@pytest.fixture
def dataset_dir(tmp_path):
    return generate(tmp_path / "syn", SMALL)


def test_generated_layout_reads_back(dataset_dir):
    classes = read_mapping(dataset_dir / "mapping.txt")
    assert len(classes) == SMALL.classes and classes[0] == "background"
    train = MSTCNDataset(dataset_dir, 1, "train")
    test = MSTCNDataset(dataset_dir, 1, "test")
    assert len(train) + len(test) == SMALL.videos
    assert not set(train.names) & set(test.names)
    assert train.feature_dim() == SMALL.dim
    for video in list(train) + list(test):
        T = video.labels.size
        assert SMALL.min_length <= T <= SMALL.max_length
        assert video.features.shape == (T, SMALL.dim) and video.features.dtype == np.float32
        assert video.labels.dtype == np.int64 and video.labels.min() >= 0 and video.labels.max() < SMALL.classes
        # features on disk are [D, T]
        on_disk = np.load(dataset_dir / "features" / f"{video.name}.npy")
        np.testing.assert_array_equal(on_disk.T, video.features)
        # every video starts and ends with background and has steps in between
        names, _, _ = segments(video.labels)
        assert names[0] == 0 and names[-1] == 0 and len(names) >= 3


def test_splits_cover_every_video_once_as_test(dataset_dir):
    tests = [set(read_bundle(dataset_dir / "splits" / f"test.split{k}.bundle")) for k in (1, 2)]
    assert not tests[0] & tests[1]
    assert len(tests[0] | tests[1]) == SMALL.videos


def test_sample_rate_and_upsampling(dataset_dir):
    full = MSTCNDataset(dataset_dir, 1, "train")[0]
    half = MSTCNDataset(dataset_dir, 1, "train", sample_rate=2)[0]
    np.testing.assert_array_equal(half.labels, full.labels[::2])
    np.testing.assert_array_equal(half.features, full.features[::2])
    np.testing.assert_array_equal(half.full_labels, full.labels)
    up = half.upsample(half.labels)
    assert up.size == full.labels.size
    np.testing.assert_array_equal(up[::2], half.labels)


def test_twins_look_alike(tmp_path):
    spec = SyntheticSpec(videos=4, min_length=2000, max_length=2000, classes=7, dim=16, twins=1, activities=2,
                         noise=0.0, segment_noise=0.0, splits=1, seed=5)
    features, labels = [], []
    for video in MSTCNDataset(generate(tmp_path, spec), 1, "test"):
        features.append(video.features)
        labels.append(video.labels)
    looks = {}
    for f, y in zip(features, labels, strict=True):
        for c in np.unique(y):
            looks[int(c)] = f[y == c][0]
    distinct = {tuple(np.round(v, 5)) for v in looks.values()}
    assert len(distinct) == spec.classes - spec.twins  # one pair of classes shares an appearance


def test_generator_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", SMALL)
    b = generate(tmp_path / "b", SMALL)
    for name in read_bundle(a / "splits" / "train.split1.bundle"):
        np.testing.assert_array_equal(np.load(a / "features" / f"{name}.npy"), np.load(b / "features" / f"{name}.npy"))
        assert (a / "groundTruth" / f"{name}.txt").read_text() == (b / "groundTruth" / f"{name}.txt").read_text()


def test_generator_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--small", "--seed", "3"]) == 0
    assert "wrote 8 videos" in capsys.readouterr().out
    assert len(MSTCNDataset(tmp_path / "d", 2, "test")) == 4
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "e"), "--classes", "3"])
    proc = subprocess.run([sys.executable, "-m", "fastlocal.data.synthetic", "--help"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "--max-length" in proc.stdout


def test_spec_validation():
    with pytest.raises(ValueError, match="min_length"):
        SyntheticSpec(min_length=10, max_length=5)
    with pytest.raises(ValueError, match="splits"):
        SyntheticSpec(videos=3, splits=4)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"videos": 2.5}, TypeError, "videos must be an int"),
        ({"classes": True}, TypeError, "classes must be an int"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
        ({"noise": "1"}, TypeError, "noise must be a float"),
        ({"dim": 0}, ValueError, "dim must be >= 1"),
        ({"noise": -1.0}, ValueError, "noise must be a finite number >= 0"),
        ({"signal": float("nan")}, ValueError, "signal must be a finite number"),
        ({"segment_noise": float("inf")}, ValueError, "segment_noise must be a finite number"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"twins": -1}, ValueError, "twins must be >= 0"),
        ({"activities": 0}, ValueError, "activities must be >= 1"),
        ({"min_length": 0}, ValueError, "min_length"),
        ({"max_length": 10**9}, ValueError, r"max_length \* dim .* 2\*\*26"),
        ({"classes": 10**7}, ValueError, r"classes \* dim"),
        ({"classes": 4}, ValueError, "need at least 2 per activity"),
    ],
)
def test_spec_arguments_named(overrides, error, match):
    with pytest.raises(error, match=match):
        SyntheticSpec(**overrides)


def test_generate_and_cli_argument_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out must be a directory"):
        generate(tmp_path / "file", SMALL)
    with pytest.raises(ValueError, match="out must be a directory path"):
        generate("", SMALL)
    with pytest.raises(TypeError, match="out"):
        generate(None, SMALL)
    with pytest.raises(TypeError, match="spec"):
        generate(tmp_path / "d", {"videos": 4})
    for argv in (["--out", str(tmp_path / "file"), "--small"], ["--out", str(tmp_path / "d"), "--noise", "-2"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "out must be a directory" in err and "noise must be a finite number >= 0" in err


# ---- errors -------------------------------------------------------------------------------------


def test_missing_directory_and_files(tmp_path, dataset_dir):
    with pytest.raises(DatasetError, match="dataset directory not found"):
        MSTCNDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"split file not found: .*test\.split9\.bundle.*available"):
        MSTCNDataset(dataset_dir, 9, "test")
    name = read_bundle(dataset_dir / "splits" / "train.split1.bundle")[0]
    (dataset_dir / "features" / f"{name}.npy").unlink()
    with pytest.raises(DatasetError, match=f"no features file.*{name}.npy"):
        MSTCNDataset(dataset_dir, 1, "train")
    (dataset_dir / "mapping.txt").unlink()
    with pytest.raises(DatasetError, match="class mapping file not found"):
        MSTCNDataset(dataset_dir, 1, "test")


def test_missing_ground_truth(dataset_dir):
    ds = MSTCNDataset(dataset_dir, 1, "test")
    (dataset_dir / "groundTruth" / f"{ds.names[0]}.txt").unlink()
    with pytest.raises(DatasetError, match=f"ground-truth file not found.*{ds.names[0]}.txt"):
        ds[0]


def test_length_mismatch(dataset_dir):
    ds = MSTCNDataset(dataset_dir, 1, "test")
    path = dataset_dir / "features" / f"{ds.names[0]}.npy"
    features = np.load(path)
    np.save(path, features[:, :-3])
    T = features.shape[1]
    with pytest.raises(DatasetError, match=f"has {T - 3} frames but groundTruth/{ds.names[0]}.txt has {T} lines"):
        ds[0]
    video = MSTCNDataset(dataset_dir, 1, "test", length_mismatch="truncate")[0]
    assert video.labels.size == T - 3 and video.features.shape[0] == T - 3


def test_unknown_class_name(dataset_dir):
    ds = MSTCNDataset(dataset_dir, 1, "test")
    gt = dataset_dir / "groundTruth" / f"{ds.names[0]}.txt"
    lines = gt.read_text().splitlines()
    lines[5] = "juggle"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r":6: unknown class name\(s\) \['juggle'\]"):
        ds[0]


def test_malformed_files(tmp_path):
    bad = tmp_path / "mapping.txt"
    bad.write_text("0 background\nthis is wrong\n")
    with pytest.raises(DatasetError, match=r"mapping.txt:2: expected '<index> <class name>'"):
        read_mapping(bad)
    bad.write_text("0 a\n2 b\n")
    with pytest.raises(DatasetError, match=r"indices must be 0\.\.1"):
        read_mapping(bad)
    bad.write_text("0 a\n1 a\n")
    with pytest.raises(DatasetError, match="duplicate"):
        read_mapping(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="ground-truth file is empty"):
        read_labels(empty, {"a": 0})
    with pytest.raises(DatasetError, match="lists no videos"):
        read_bundle(empty)
    notnpy = tmp_path / "d"
    generate(notnpy, SMALL)
    name = read_bundle(notnpy / "splits" / "test.split1.bundle")[0]
    (notnpy / "features" / f"{name}.npy").write_bytes(b"not an array")
    with pytest.raises(DatasetError, match="cannot read features"):
        MSTCNDataset(notnpy, 1, "test")[0]
    np.save(notnpy / "features" / f"{name}.npy", np.zeros(5))
    with pytest.raises(DatasetError, match=r"must be a \[D, T\] array"):
        MSTCNDataset(notnpy, 1, "test")[0]


def test_argument_errors(dataset_dir):
    with pytest.raises(ValueError, match="subset"):
        MSTCNDataset(dataset_dir, 1, "val")
    with pytest.raises(ValueError, match="sample_rate"):
        MSTCNDataset(dataset_dir, 1, "train", sample_rate=0)
    with pytest.raises(ValueError, match="length_mismatch"):
        MSTCNDataset(dataset_dir, 1, "train", length_mismatch="pad")
