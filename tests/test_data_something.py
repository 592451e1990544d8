"""fastlocal.data.something: Something-Something v1/v2 label files, TSN segment sampling, the multi-scale
crop, the left/right flip rule, test views, the datasets and their errors; the synthetic_something writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastlocal.data import DatasetError, SomethingClips, SomethingSpec, SomethingViews
from fastlocal.data.kinetics import IMAGENET_MEAN, IMAGENET_STD
from fastlocal.data.something import (
    find_label_files,
    flip_targets,
    has_direction_word,
    make_views,
    multiscale_crop_boxes,
    read_class_names,
    read_split,
    segment_test_indices,
    segment_train_indices,
    train_clip,
)
from fastlocal.data.synthetic_something import CLASSES, generate, main
from fastlocal.data.synthetic_video import SyntheticVideoSpec
from fastlocal.data.video import VideoReader, write_frames

# the SSv2 classes (real indices) whose names hold "left", "right" or "upright"
SSV2_DIRECTIONAL = {
    21: "Laying something on the table on its side, not upright",
    50: "Plugging something into something but pulling it right out as you remove your hand",
    86: "Pulling something from left to right",
    87: "Pulling something from right to left",
    93: "Pushing something from left to right",
    94: "Pushing something from right to left",
    117: "Putting something that cannot actually stand upright upright on the table, so it falls on its side",
    119: "Putting something upright on the table",
    166: "Turning the camera left while filming something",
    167: "Turning the camera right while filming something",
}
MMACTION2_SSV2_FLIP_MAP = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}  # mmaction2's sthv2_flip_label_map


def _unnormalise(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Normalised values (channels along ``dim``) -> 0-255."""
    shape = [1] * x.dim()
    shape[dim] = 3
    return (x * torch.tensor(IMAGENET_STD).reshape(shape) + torch.tensor(IMAGENET_MEAN).reshape(shape)) * 255


def _coordinate_frames(t: int, h: int, w: int, step: int = 1) -> np.ndarray:
    """uint8 [t, h, w, 3]: channel 0 the frame index, 1 the column // step, 2 the row // step."""
    out = np.zeros((t, h, w, 3), np.uint8)
    out[..., 0] = np.arange(t)[:, None, None]
    out[..., 1] = (np.arange(w) // step)[None, None, :]
    out[..., 2] = (np.arange(h) // step)[None, :, None]
    return out


# ---------------------------------------------------------------- label files


def _write_v1(directory, labels="Pushing something from left to right\nHolding something\n\nMoving something up\n",
              train="12;Holding something\n\n7;Pushing something from left to right\n",
              validation="3;Moving something up\n"):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("labels", labels), ("train", train), ("validation", validation)):
        (directory / f"something-something-v1-{name}.csv").write_text(text)
    return directory


def _write_v2(directory, labels=None, train=None, validation=None):
    directory.mkdir(parents=True, exist_ok=True)
    labels = {"Moving something up": "0", "Putting something onto something": "1"} if labels is None else labels
    train = [{"id": "41775", "label": "putting a cup onto a book", "template": "Putting [something] onto [something]",
              "placeholders": ["a cup", "a book"]},
             {"id": 9, "label": "moving pen up", "template": "Moving [something] up", "placeholders": ["pen"]}] \
        if train is None else train
    validation = [{"id": "5", "label": "moving x up", "template": "Moving [something] up", "placeholders": ["x"]}] \
        if validation is None else validation
    for name, data in (("labels", labels), ("train", train), ("validation", validation)):
        text = data if isinstance(data, str) else json.dumps(data)
        (directory / f"something-something-v2-{name}.json").write_text(text)
    return directory


def test_v1_csv_labels_sorted_as_tsm_and_split_lines(tmp_path):
    d = _write_v1(tmp_path)
    version, labels, split = find_label_files(d, "train")
    assert version == 1
    assert (labels.name, split.name) == ("something-something-v1-labels.csv", "something-something-v1-train.csv")
    names = read_class_names(labels)
    assert names == ["Holding something", "Moving something up", "Pushing something from left to right"]
    entries = read_split(split, names)
    assert [(e.id, e.label) for e in entries] == [("12", 0), ("7", 2)]
    assert entries[1].where == f"{split}:3"
    assert [(e.id, e.label) for e in read_split(find_label_files(d, "validation")[2], names)] == [("3", 1)]


def test_v2_json_labels_by_index_and_templates_without_brackets(tmp_path):
    d = _write_v2(tmp_path, labels={"Putting something onto something": 1, "Moving something up": "0"})
    version, labels, split = find_label_files(d, "train")
    assert version == 2
    names = read_class_names(labels)
    assert names == ["Moving something up", "Putting something onto something"]
    entries = read_split(split, names)
    assert [(e.id, e.label) for e in entries] == [("41775", 1), ("9", 0)]
    assert entries[0].where == f"{split} entry 0"


def test_find_label_files_picks_the_version_present_or_asks(tmp_path):
    both = _write_v2(_write_v1(tmp_path / "both"))
    with pytest.raises(DatasetError, match=r"exactly one of .*found 2; pass version"):
        find_label_files(both, "train")
    assert find_label_files(both, "validation", version=1)[0] == 1
    assert find_label_files(both, "validation", version=2)[2].name == "something-something-v2-validation.json"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="found 0") as info:
        find_label_files(tmp_path / "empty", "train")
    assert "something-something-v1-labels.csv" in str(info.value)
    with pytest.raises(DatasetError, match=r"annotations directory not found: .*nowhere"):
        find_label_files(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        find_label_files(both, "test")
    for version in (3, True):
        with pytest.raises(ValueError, match="version must be 1, 2 or None"):
            find_label_files(both, "train", version=version)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"is not valid JSON: .* at line 1 column 2"),
    ("[]", "non-empty JSON object"),
    ('{"a": "x"}', "the index of 'a' must be an integer, got 'x'"),
    ('{"a": true}', "the index of 'a' must be an integer, got True"),
    ('{"a": 0, "b": "0"}', "index 0 is given to both 'a' and 'b'"),
    ('{"a": 0, "b": 2}', r"the indices must be 0..1, got \[2\] outside it"),
])
def test_v2_labels_file_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "something-something-v2-labels.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as info:
        read_class_names(path)
    assert str(path) in str(info.value)


def test_v1_labels_and_other_label_file_errors(tmp_path):
    path = tmp_path / "something-something-v1-labels.csv"
    path.write_text("A\nB\nA\n")
    with pytest.raises(DatasetError, match="lists class 'A' twice"):
        read_class_names(path)
    path.write_text("\n \n")
    with pytest.raises(DatasetError, match=f"labels file lists no classes: {path}"):
        read_class_names(path)
    with pytest.raises(DatasetError, match=f"labels file not found: {tmp_path / 'missing.csv'}"):
        read_class_names(tmp_path / "missing.csv")
    (tmp_path / "labels.txt").write_text("A\n")
    with pytest.raises(DatasetError, match=r"must be a v1 \.csv or a v2 \.json file"):
        read_class_names(tmp_path / "labels.txt")
    with pytest.raises(TypeError, match=r"labels_file must be a str or os\.PathLike"):
        read_class_names(3)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("s.csv", "12;Holding something\n13 Holding something\n", r"s.csv:2: expected '<id>;<class name>'"),
    ("s.csv", ";Holding something\n", r"s.csv:1: expected '<id>;<class name>'"),
    ("s.csv", "12;\n", r"s.csv:1: expected"),
    ("s.csv", "12;Holding nothing\n", r"s.csv:1 \(id 12\): unknown class 'Holding nothing' \(not in .*labels.csv\)"),
    ("s.csv", "\n\n", "split file lists no videos"),
    ("s.json", '{"id": "1"}', "must hold a JSON list of videos, got dict"),
    ("s.json", '[{"id": "1"}]', r"s.json entry 0: expected an object with an 'id' and a 'template' string \(a test"),
    ("s.json", '[{"id": true, "template": "Holding [something]"}]', "entry 0: expected an object"),
    ("s.json", '[{"id": "4", "template": "Holding [nothing]"}]', r"entry 0 \(id 4\): unknown class 'Holding nothing'"),
    ("s.json", "[", "s.json is not valid JSON"),
    ("s.json", "[]", "split file lists no videos"),
    ("s.txt", "1;Holding something\n", "must be a v1 .csv or a v2 .json file"),
])
def test_split_file_errors_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_split(tmp_path / name, ["Holding something"], labels_file=tmp_path / "labels.csv")


# ---------------------------------------------------------------- TSN sampling


def test_test_indices_are_segment_centres_by_hand():
    # tick = 20 / 8 = 2.5: int(1.25 + 2.5 k)
    np.testing.assert_array_equal(segment_test_indices(20, 8), [[1, 3, 6, 8, 11, 13, 16, 18]])
    # 16 segments of 30 frames: tick 1.875, int(0.9375 + 1.875 k)
    np.testing.assert_array_equal(segment_test_indices(30, 16)[0],
                                  [0, 2, 4, 6, 8, 10, 12, 14, 15, 17, 19, 21, 23, 25, 27, 29])
    # TSM's twice_sample: the centres, then int(tick * k)
    np.testing.assert_array_equal(segment_test_indices(20, 8, clips=2),
                                  [[1, 3, 6, 8, 11, 13, 16, 18], [0, 2, 5, 7, 10, 12, 15, 17]])
    # 3 clips, tick 6: offsets 1/2, 5/6, 1/6 of a segment -> 3, 5, 1
    np.testing.assert_array_equal(segment_test_indices(24, 4, clips=3),
                                  [[3, 9, 15, 21], [5, 11, 17, 23], [1, 7, 13, 19]])
    # fewer frames than segments: tick 0.625, int(0.3125 + 0.625 k) repeats frames in order
    np.testing.assert_array_equal(segment_test_indices(5, 8)[0], [0, 0, 1, 2, 2, 3, 4, 4])
    assert segment_test_indices(1, 8).tolist() == [[0] * 8]


def test_train_indices_one_random_frame_per_segment_by_hand():
    # 17 frames, 8 segments of 17 // 8 = 2 frames: frame 16 is never used (as TSN)
    draws = torch.randint(2, (8,), generator=torch.Generator().manual_seed(5)).numpy()
    got = segment_train_indices(17, 8, torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(got, np.arange(8) * 2 + draws)
    seen = np.zeros(17, int)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = segment_train_indices(17, 8, generator)
        assert idx.dtype == np.int64 and np.all((idx >= 2 * np.arange(8)) & (idx <= 2 * np.arange(8) + 1))
        np.add.at(seen, idx, 1)
    assert seen[16] == 0 and np.all(seen[:16] > 60)  # each of frames 0..15 drawn about 100 times
    # 16 segments of 35 frames: duration 2
    idx = segment_train_indices(35, 16, torch.Generator().manual_seed(1))
    assert np.all(idx // 2 == np.arange(16))
    # fewer frames than segments: the ordered centres, not TSN's all-zero
    np.testing.assert_array_equal(segment_train_indices(5, 8), [0, 0, 1, 2, 2, 3, 4, 4])


def test_sampling_errors():
    with pytest.raises(ValueError, match="num_frames must be an int >= 1, got 0"):
        segment_train_indices(0, 8)
    with pytest.raises(ValueError, match="num_segments must be an int >= 1, got 0"):
        segment_test_indices(8, 0)
    with pytest.raises(ValueError, match="clips must be an int >= 1, got 0"):
        segment_test_indices(8, 8, clips=0)


# ---------------------------------------------------------------- multi-scale crop


def test_multiscale_crop_sizes_and_positions_of_240x320_by_hand():
    groups = multiscale_crop_boxes(240, 320, 224)
    # sides int(240 * s) = 240, 210, 180, 158 (none within 3 of 224); |i - j| <= 1, height-major
    sizes = [g[0][2:] for g in groups]
    assert sizes == [(240, 240), (240, 210), (210, 240), (210, 210), (210, 180), (180, 210), (180, 180),
                     (180, 158), (158, 180), (158, 158)]
    assert all(len(g) == 13 for g in groups)
    # a 158 x 180 crop: steps ((240 - 158) // 4, (320 - 180) // 4) = (20, 35)
    assert groups[8] == [(0, 0, 158, 180), (0, 140, 158, 180), (80, 0, 158, 180), (80, 140, 158, 180),
                         (40, 70, 158, 180), (40, 0, 158, 180), (40, 140, 158, 180), (80, 70, 158, 180),
                         (0, 70, 158, 180), (20, 35, 158, 180), (20, 105, 158, 180), (60, 35, 158, 180),
                         (60, 105, 158, 180)]
    five = multiscale_crop_boxes(240, 320, 224, max_distort=0, more_fix_crop=False)
    assert [g[0][2:] for g in five] == [(240, 240), (210, 210), (180, 180), (158, 158)]
    assert five[0] == [(0, 0, 240, 240), (0, 80, 240, 240), (0, 0, 240, 240), (0, 80, 240, 240), (0, 40, 240, 240)]


def test_multiscale_crop_snaps_sides_near_the_crop_size():
    # int(256 * .875) = 224 and int(226 * 1) = 226 are within 3 of 224: snapped; 197, 169, 149 are not
    assert sorted({g[0][2] for g in multiscale_crop_boxes(256, 340, 224)}) == [168, 192, 224, 256]
    assert sorted({g[0][2] for g in multiscale_crop_boxes(226, 300, 224)}) == [149, 169, 197, 224]
    # a snapped side larger than the frame is cut to it (TSM would pad)
    assert {g[0][2] for g in multiscale_crop_boxes(222, 300, 224, scales=(1.0,))} == {222}


def test_train_clip_is_a_box_of_the_grid_resized_then_maybe_flipped():
    # 40 x 48 frames, scale 1 only: one 40 x 40 size at left in {0, 2, 4, 6, 8}, resized 2x down
    frames = _coordinate_frames(3, 40, 48)
    spec = SomethingSpec(num_segments=3, frame_size=None, crop_size=20, scales=(1.0,))
    lefts, flips = [], []
    for seed in range(40):
        clip, flipped = train_clip(frames, spec, flip=True, generator=torch.Generator().manual_seed(seed))
        assert clip.shape == (3, 3, 20, 20) and clip.dtype == torch.float32
        raw = _unnormalise(clip).double()
        if flipped:
            raw = raw.flip(-1)
        # bilinear 2x down with half-pixel centres = the mean of 2 x 2 blocks
        np.testing.assert_allclose(raw[2, 0, :, 0].numpy(), np.arange(20) * 2 + 0.5, atol=1e-3)
        np.testing.assert_allclose(raw[0, :, 0, 0].numpy(), [0, 1, 2], atol=1e-3)  # frames keep their order
        left = raw[1, 0, 0, 0].item() - 0.5
        np.testing.assert_allclose(raw[1, 0, 0].numpy(), left + 0.5 + np.arange(20) * 2, atol=1e-3)
        lefts.append(round(left))
        flips.append(flipped)
        # the same draws reproduced: crop group, position, coin
        g = torch.Generator().manual_seed(seed)
        torch.randint(1, (), generator=g)
        position = int(torch.randint(13, (), generator=g))
        grid_x = [0, 4, 0, 4, 2, 0, 4, 2, 2, 1, 3, 1, 3][position]
        assert lefts[-1] == 2 * grid_x
        assert flipped == (float(torch.rand((), generator=g)) < 0.5)
    assert set(lefts) == {0, 2, 4, 6, 8} and 10 < sum(flips) < 30
    # flip=False (the class forbids it): the coin is drawn, nothing flips
    clip, flipped = train_clip(frames, spec, flip=False, generator=torch.Generator().manual_seed(0))
    assert not flipped and _unnormalise(clip)[1, 0, 0, 1] > _unnormalise(clip)[1, 0, 0, 0]


def test_train_clip_resizes_frames_to_frame_size_first():
    frames = _coordinate_frames(2, 30, 40)
    spec = SomethingSpec(num_segments=2, frame_size=(60, 80), crop_size=60, scales=(1.0,), flip="none")
    clip, _ = train_clip(frames, spec, flip=False, generator=torch.Generator().manual_seed(3))
    raw = _unnormalise(clip)
    # a 2x upsampling: row r of the 60 x 80 frame samples source row (r + 0.5) / 2 - 0.5 (clamped at 0)
    np.testing.assert_allclose(raw[2, 0, 1:59, 0].numpy(), (np.arange(1, 59) + 0.5) / 2 - 0.5, atol=1e-3)


# ---------------------------------------------------------------- flip rule


def test_direction_words_are_whole_words():
    words = {i for i, name in SSV2_DIRECTIONAL.items() if has_direction_word(name)}
    assert words == {50, 86, 87, 93, 94, 166, 167}  # "upright" is not "right"; 50 says "pulling it right out"
    assert has_direction_word("Swiping Left") and not has_direction_word("Moving something up")


def test_flip_rules_on_the_ssv2_classes():
    names = [SSV2_DIRECTIONAL.get(i, f"Class {i}") for i in range(174)]
    identity = np.arange(174)
    paper = flip_targets(names, "no-left-right")
    assert set(np.flatnonzero(paper < 0)) == {50, 86, 87, 93, 94, 166, 167}
    np.testing.assert_array_equal(paper[paper >= 0], identity[paper >= 0])
    swap = flip_targets(names, "swap")
    assert {i: int(t) for i, t in enumerate(swap) if t != i} == {**MMACTION2_SSV2_FLIP_MAP, 50: -1}
    assert (flip_targets(names, "none") == -1).all()
    np.testing.assert_array_equal(flip_targets(names, "all"), identity)
    with pytest.raises(ValueError, match="flip rule must be one of"):
        flip_targets(names, "mirror")


# ---------------------------------------------------------------- test views


def test_paper_view_is_the_centre_224_of_240x320():
    frames = _coordinate_frames(8, 240, 320, step=2)
    views = make_views(frames, SomethingSpec())
    assert views.shape == (1, 3, 8, 224, 224)
    raw = _unnormalise(views[0]).round()
    assert raw[1, 0, 0, :4].tolist() == [24, 24, 25, 25]  # left 48 (columns // 2)
    assert raw[2, 0, :4, 0].tolist() == [4, 4, 5, 5]  # top 8
    assert raw[0, :, 0, 0].tolist() == list(range(8))


def test_three_crops_by_two_clips_crop_major():
    clips, S = 2, 3
    frames = _coordinate_frames(clips * S, 30, 40)
    spec = SomethingSpec(num_segments=S, frame_size=None, crop_size=24, test_clips=clips, test_crops=3)
    views = make_views(frames, spec)
    assert views.shape == (6, 3, 3, 24, 24)
    raw = _unnormalise(views, dim=1).round()
    for c, left in enumerate([0, 8, 16]):
        for j in range(clips):
            v = raw[c * clips + j]
            assert v[0, :, 0, 0].tolist() == [j * S + t for t in range(S)]
            assert v[1, 0, 0, 0] == left and v[2, 0, 0, 0] == 3  # top (30 - 24) // 2
    one = make_views(frames[:S], SomethingSpec(num_segments=S, frame_size=None, crop_size=24))
    assert _unnormalise(one, dim=1).round()[0, 1, 0, 0, 0] == 8  # centre


def test_tsm_test_resize_short_side_then_centre_crop():
    frames = _coordinate_frames(2, 100, 176)  # SSv1 frames are 100 pixels high
    spec = SomethingSpec(num_segments=2, frame_size=None, test_short_side=256)
    views = make_views(frames, spec)
    assert views.shape == (1, 3, 2, 224, 224)
    raw = _unnormalise(views[0])
    # 100 x 176 -> 256 x int(256 * 176 / 100) = 450, centre crop at left (450 - 224) // 2 = 113: a linear ramp
    expected = (113 + np.arange(224) + 0.5) * 176 / 450 - 0.5
    np.testing.assert_allclose(raw[1, 0, 5].numpy(), expected, atol=2e-3)
    with pytest.raises(ValueError, match=r"smaller than crop_size 224: set SomethingSpec\.frame_size"):
        make_views(frames, SomethingSpec(num_segments=2, frame_size=None))
    with pytest.raises(ValueError, match="test_clips x num_segments = 1 x 8 frames, got 2"):
        make_views(frames, SomethingSpec())


@pytest.mark.parametrize(("changes", "message"), [
    ({"num_segments": 0}, "num_segments must be an int >= 1"),
    ({"crop_size": True}, "crop_size must be an int >= 1"),
    ({"max_distort": -1}, "max_distort must be an int >= 0"),
    ({"test_clips": 0}, "test_clips must be an int >= 1"),
    ({"frame_size": (200, 320)}, r"frame_size must be None or \(height, width\) ints >= crop_size \(224\)"),
    ({"frame_size": 240}, "frame_size must be None"),
    ({"test_short_side": 200}, "test_short_side must be None or an int >= crop_size"),
    ({"scales": ()}, "scales must be a non-empty tuple"),
    ({"scales": (1.0, 1.2)}, r"scales must be a non-empty tuple of numbers in \(0, 1\]"),
    ({"more_fix_crop": 1}, "more_fix_crop must be a bool"),
    ({"flip": "yes"}, "flip must be one of"),
    ({"test_crops": 2}, "test_crops must be 1"),
    ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers"),
    ({"std": (0.5, 0.0, 0.5)}, "std must be 3 finite numbers > 0"),
])
def test_spec_errors(changes, message):
    with pytest.raises(ValueError, match="SomethingSpec." + message):
        SomethingSpec(**changes)


# ---------------------------------------------------------------- datasets and the synthetic writer

SYN = SyntheticVideoSpec(videos=12, frames=12, height=32, width=40, radius=(3.0, 6.0), noise=0.0, val_fraction=0.5,
                         image_format="png", formats=("frames",), seed=4)
SMALL = SomethingSpec(frame_size=(32, 40), crop_size=24)


@pytest.fixture(scope="module")
def synthetic_v2(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("ssv2"), SYN, version=2)


@pytest.fixture(scope="module", params=[1, 2])
def synthetic(request, tmp_path_factory):
    if request.param == 2:
        return 2, request.getfixturevalue("synthetic_v2")
    return 1, generate(tmp_path_factory.mktemp("ssv1"), SYN, version=1)


def _disc_track(frames: np.ndarray, axis: int) -> np.ndarray:
    """Per-frame circular centroid (pixels) of the bright disc along ``axis`` (1 rows, 2 columns)."""
    brightness = np.clip(frames.mean(-1) - 100.0, 0, None)  # the disc is >= 170, the background <= 90
    n = frames.shape[axis]
    angle = 2 * np.pi * np.arange(n) / n
    weight = brightness.sum(axis=3 - axis)  # [T, n]
    return np.angle(weight @ np.exp(1j * angle)) * n / (2 * np.pi)


def test_synthetic_writer_layout_labels_and_motion(synthetic):
    version, root = synthetic
    names = read_class_names(find_label_files(root, "train")[1])
    assert names == (sorted(CLASSES) if version == 1 else list(CLASSES))
    train = read_split(find_label_files(root, "train")[2], names)
    val = read_split(find_label_files(root, "validation")[2], names)
    assert len(train) + len(val) == 12 and len(val) == 6  # half of each class's 2 videos
    assert {e.label for e in val} == set(range(6))
    assert sorted(int(e.id) for e in train + val) == list(range(1, 13))
    assert sorted(p.name for p in (root / "frames" / "1").iterdir())[:2] == ["00001.png", "00002.png"]
    for entry in train + val:
        frames = VideoReader(root / "frames" / entry.id).read()
        assert frames.shape == (12, 32, 40, 3)
        name = names[entry.label]
        axis, sign = {"Moving something up": (1, -1), "Moving something down": (1, 1),
                      "Pushing something from left to right": (2, 1),
                      "Pushing something from right to left": (2, -1)}.get(name, (0, 0))
        if axis:
            n = frames.shape[axis]
            step = (np.diff(_disc_track(frames, axis)) + n / 2) % n - n / 2
            assert np.all(np.sign(step) == sign) and 0.4 < abs(step.mean()) < 1.6, (name, step)
        else:  # towards / away from the camera: the disc grows / shrinks
            area = (frames.mean(-1) > 130).sum((1, 2))
            assert (area[-1] > area[0]) == (name == "Moving something towards the camera")
    if version == 2:
        items = json.loads((root / "something-something-v2-train.json").read_text())
        assert {"id", "label", "template", "placeholders"} <= set(items[0])
        assert "[something]" in items[0]["template"]


def test_datasets_on_the_synthetic_set(synthetic):
    version, root = synthetic
    clips = SomethingClips(root / "frames", root, spec=SMALL, generator=torch.Generator().manual_seed(0))
    assert clips.version == version and clips.num_classes == 6 and len(clips) == 6
    clip, label, video_id = clips[0]
    assert clip.shape == (3, 8, 24, 24) and clip.dtype == torch.float32
    assert (label, video_id) == (clips.entries[0].label, clips.entries[0].id)
    views = SomethingViews(root / "frames", root, spec=SomethingSpec(frame_size=(32, 40), crop_size=24, test_clips=2,
                                                                     test_crops=3))
    x, label, video_id = views[1]
    assert x.shape == (6, 3, 8, 24, 24) and (label, video_id) == (views.labels[1], views.entries[1].id)
    # the default single view: the centre crop of the 8 centre frames
    single = SomethingViews(root / "frames", root, spec=SMALL)
    frames = VideoReader(root / "frames" / single.entries[0].id).read(segment_test_indices(12, 8)[0])
    torch.testing.assert_close(single[0][0], make_views(frames, SMALL))


@pytest.mark.parametrize("rule", ["no-left-right", "swap"])
def test_left_right_classes_follow_the_flip_rule(synthetic_v2, rule):
    root = synthetic_v2
    spec = SomethingSpec(frame_size=(32, 40), crop_size=24, flip=rule)
    data = SomethingClips(root / "frames", root, spec=spec)
    names = data.class_names
    flips = {}
    for i, entry in enumerate(data.entries):
        name = names[entry.label]
        frames = VideoReader(root / "frames" / entry.id).read()
        for seed in range(5):
            data.generator = torch.Generator().manual_seed(seed)
            clip, label, _ = data[i]
            g = torch.Generator().manual_seed(seed)  # the same draws: indices, crop, position, coin
            plain, _ = train_clip(frames[segment_train_indices(12, 8, g)], spec, False, g)
            flipped = not torch.equal(clip, plain)
            if flipped:
                torch.testing.assert_close(clip, plain.flip(-1))
            flips.setdefault(name, []).append(flipped)
            partner = {"Pushing something from left to right": "Pushing something from right to left",
                       "Pushing something from right to left": "Pushing something from left to right"}.get(name, name) \
                if rule == "swap" else name
            assert names[label] == (partner if flipped else name)
    directional = [f for name, fs in flips.items() if has_direction_word(name) for f in fs]
    others = [f for name, fs in flips.items() if not has_direction_word(name) for f in fs]
    assert any(others) and not all(others)
    assert (not any(directional)) if rule == "no-left-right" else (any(directional) and not all(directional))


def test_dataset_errors_name_the_file(tmp_path):
    annotations = _write_v2(tmp_path / "ann")
    data = SomethingViews(tmp_path / "frames", annotations, spec=SMALL)
    with pytest.raises(DatasetError, match=r"frame folder of video 5 \(listed at .*validation.json entry 0\) not "
                                           r"found: .*frames/5"):
        data[0]
    (tmp_path / "frames" / "5").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"frame folder holds no .* images: .*frames/5"):
        data[0]
    write_frames(tmp_path / "frames" / "5", _coordinate_frames(3, 32, 40), ext="png", prefix="")
    assert data[0][0].shape == (1, 3, 8, 24, 24)  # 3 frames, 8 segments: frames repeat
    _write_v2(tmp_path / "bad", train=[{"id": "1", "template": "Dancing with [something]"}])
    with pytest.raises(DatasetError, match=r"train.json entry 0 \(id 1\): unknown class 'Dancing with something' "
                                           r"\(not in .*v2-labels.json\)"):
        SomethingClips(tmp_path / "frames", tmp_path / "bad")
    with pytest.raises(TypeError, match="spec must be a SomethingSpec"):
        SomethingClips(tmp_path / "frames", annotations, spec={"num_segments": 8})
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        SomethingClips(tmp_path / "frames", annotations, generator=0)


def test_writer_errors_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        generate(tmp_path / "a", SYN, version=3)
    with pytest.raises(ValueError, match="classes must be distinct names"):
        generate(tmp_path / "a", SYN, classes=["Moving something up", "Jumping"])
    with pytest.raises(ValueError, match=r"spec.videos must be >= 2 per class \(12\)"):
        generate(tmp_path / "a", SyntheticVideoSpec(videos=8, formats=("frames",)))
    with pytest.raises(ValueError, match="must be < width / 2 for horizontal motion"):
        generate(tmp_path / "a", SyntheticVideoSpec(height=48, width=12, radius=(2.0, 4.0), speed=(0.5, 6.5),
                                                   formats=("frames",)))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out must be a directory"):
        generate(tmp_path / "file", SYN)
    with pytest.raises(TypeError, match="spec must be a SyntheticVideoSpec"):
        generate(tmp_path / "a", {"videos": 12})
    assert main(["--out", str(tmp_path / "cli"), "--version", "1", "--videos", "12", "--frames", "4", "--height",
                 "24", "--width", "28", "--image-format", "png"]) == 0
    assert "Something-Something v1" in capsys.readouterr().out
    assert len(read_split(tmp_path / "cli" / "something-something-v1-train.csv",
                          read_class_names(tmp_path / "cli" / "something-something-v1-labels.csv"))) == 6
