"""fastlocal.data video decoding (video.py), Kinetics lists, clips and test views (kinetics.py) and the
synthetic motion/order video set (synthetic_video.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastlocal.data import (
    ClipSpec,
    DatasetError,
    KineticsClips,
    KineticsViews,
    VideoDecoderMissingError,
    VideoReader,
    read_frames,
    read_video_list,
)
from fastlocal.data.kinetics import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_offsets,
    make_views,
    normalize,
    resize_short_side,
    train_clip,
    train_frame_indices,
    view_frame_indices,
)
from fastlocal.data.synthetic_video import (
    SyntheticVideoSpec,
    generate,
    main,
    make_video,
    render_video,
    sample_params,
)
from fastlocal.data.video import list_frame_files, write_frames, write_video

av = pytest.importorskip("av")  # the `video` extra is part of the test environment (setup.py extras "test")

SMALL = SyntheticVideoSpec(videos=8, frames=24, height=32, width=40, radius=(3.0, 7.0), noise=2.0, val_fraction=0.5,
                           seed=3, formats=("frames", "mp4"))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """A smooth 12-frame video uint8 [12, 32, 40, 3] (a moving disc: JPEG and H.264 keep it well)."""
    spec = SyntheticVideoSpec(frames=12, height=32, width=40, radius=(3.0, 7.0), noise=0.0, formats=("frames",))
    return make_video("down", np.random.default_rng(0), spec)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synvid"), SMALL)


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Normalised [3, ...] -> values in 0-255."""
    shape = (3,) + (1,) * (x.dim() - 1)
    return (x * torch.tensor(IMAGENET_STD).reshape(shape) + torch.tensor(IMAGENET_MEAN).reshape(shape)) * 255


# ---------------------------------------------------------------- decoding


def test_png_frames_round_trip_exactly(tmp_path, frames):
    paths = write_frames(tmp_path / "v", frames, ext="png")
    assert [p.name for p in paths[:2]] == ["img_00001.png", "img_00002.png"]
    reader = VideoReader(tmp_path / "v")
    assert reader.is_folder and reader.num_frames == 12
    np.testing.assert_array_equal(reader.read(), frames)
    np.testing.assert_array_equal(reader.read([11, 0, 3, 3]), frames[[11, 0, 3, 3]])


def test_jpeg_frames_round_trip_within_jpeg_tolerance(tmp_path, frames):
    write_frames(tmp_path / "v", frames, ext="jpg", quality=95)
    back = read_frames(tmp_path / "v").astype(np.int16)
    error = np.abs(back - frames)
    assert back.shape == frames.shape
    assert error.mean() < 1.5 and np.percentile(error, 99) <= 12, (error.mean(), np.percentile(error, 99))


def test_frame_folder_natural_order_and_extensions(tmp_path, frames):
    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(12):  # frame_1 ... frame_12 with mixed extensions: natural order, not string order
        Image.fromarray(frames[i]).save(folder / f"frame_{i + 1}.{'PNG' if i % 2 else 'png'}", format="PNG")
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_frame_files(folder)][:3] == ["frame_1.png", "frame_2.PNG", "frame_3.png"]
    np.testing.assert_array_equal(read_frames(folder), frames)


def test_lossless_video_round_trip_exact(tmp_path, frames):
    path = write_video(tmp_path / "v.mp4", frames, codec="libx264rgb", crf=0)
    reader = VideoReader(path)
    assert not reader.is_folder and reader.num_frames == 12
    np.testing.assert_array_equal(reader.read([5, 0, 11, 5, 2]), frames[[5, 0, 11, 5, 2]])
    np.testing.assert_array_equal(read_frames(path), frames)


def test_h264_video_round_trip_within_tolerance(tmp_path, frames):
    path = write_video(tmp_path / "v.mp4", frames, codec="libx264", crf=18)
    back = read_frames(path).astype(np.int16)
    error = np.abs(back - frames)
    assert back.shape == frames.shape
    assert error.mean() < 3.0, error.mean()
    # the frames come back in order: each decoded frame is closest to its own original
    distance = np.abs(back[:, None].astype(np.float32) - frames[None]).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(12))


def test_frame_count_without_header_counts_packets(tmp_path, frames):
    path = write_video(tmp_path / "v.mkv", frames, codec="ffv1")  # Matroska stores no frame count
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert VideoReader(path).num_frames == 12


def test_damaged_tail_repeats_last_decodable_frame(tmp_path, frames):
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # index first, data after
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.options = 40, 32, "rgb24", {"crf": "0"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    reader = VideoReader(path)
    assert reader.num_frames == 12  # the header still says 12
    out = reader.read([0, 1, 11])
    np.testing.assert_array_equal(out[:2], frames[:2])
    decoded = [i for i in range(12) if np.array_equal(out[2], frames[i])]
    assert len(decoded) == 1 and 1 <= decoded[0] < 11  # frame 11 is gone: the last decodable one stands in


def test_decoding_errors_name_the_file(tmp_path, frames):
    with pytest.raises(DatasetError, match=r"video not found: .*nope\.mp4"):
        VideoReader(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"definitely not a video " * 64)
    with pytest.raises(DatasetError, match=r"cannot decode video .*garbage\.mp4"):
        VideoReader(garbage).num_frames  # noqa: B018 - the property decodes the header
    with pytest.raises(DatasetError, match=r"cannot decode video .*garbage\.mp4"):
        read_frames(garbage, [0])
    audio = tmp_path / "audio.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(DatasetError, match=r"audio\.wav: the file has no video stream"):
        VideoReader(audio).num_frames  # noqa: B018
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"frame folder holds no .*empty"):
        VideoReader(empty)
    folder = tmp_path / "frames"
    write_frames(folder, frames[:3], ext="png")
    (folder / "img_00002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"cannot decode image .*img_00002\.png"):
        read_frames(folder)
    mixed = tmp_path / "mixed"
    write_frames(mixed, frames[:2], ext="png")
    write_frames(mixed, frames[:1, :16], ext="png", prefix="img_9")
    with pytest.raises(DatasetError, match=r"frames of .*mixed differ in size"):
        read_frames(mixed)
    with pytest.raises(IndexError, match=r"\[0, 3\).*got values in \[0, 3\]"):
        read_frames(folder, [0, 3])
    with pytest.raises(TypeError, match="indices must be a 1-D sequence of ints"):
        read_frames(folder, [0.5])
    with pytest.raises(ValueError, match="at least one frame"):
        read_frames(folder, [])
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        VideoReader(3)


def test_writer_argument_errors(tmp_path, frames):
    with pytest.raises(ValueError, match=r"uint8 array \[N, H, W, 3\]"):
        write_frames(tmp_path / "a", frames.astype(np.float32))
    with pytest.raises(ValueError, match="ext must be 'jpg' or 'png'"):
        write_frames(tmp_path / "a", frames, ext="bmp")
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "a.mp4", frames[:, :31])
    with pytest.raises(ValueError, match=r"cannot write video .*codec 'no-such-codec'"):
        write_video(tmp_path / "a.mp4", frames, codec="no-such-codec")


def test_missing_pyav_is_an_import_error_naming_the_extra(tmp_path, frames, monkeypatch):
    write_frames(tmp_path / "v", frames[:2], ext="png")
    write_video(tmp_path / "v.mp4", frames[:2])
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(VideoDecoderMissingError, match=r"pip install fastlocal\[video\]") as info:
        read_frames(tmp_path / "v.mp4")
    assert isinstance(info.value, ImportError)
    with pytest.raises(ImportError, match=r"fastlocal\[video\]"):
        write_video(tmp_path / "w.mp4", frames[:2])
    np.testing.assert_array_equal(read_frames(tmp_path / "v"), frames[:2])  # folders need only Pillow


# ---------------------------------------------------------------- list files


def test_list_file_parsing(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text(f"a/x.mp4 300 0\n\nb/y 120 3\n{tmp_path}/abs.mp4 10 1\n")
    entries = read_video_list(listing, tmp_path / "root", num_classes=4)
    assert [(e.name, e.label, e.line) for e in entries] == [("a/x.mp4", 0, 1), ("b/y", 3, 3),
                                                           (f"{tmp_path}/abs.mp4", 1, 4)]
    assert entries[0].path == tmp_path / "root" / "a" / "x.mp4"
    assert entries[2].path == tmp_path / "abs.mp4"  # an absolute path is kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.mp4 1 0\nb.mp4 0\n", r"train\.txt:2: expected '<path> <unused> <label>' .* got 2 fields"),
        ("a.mp4 1 0\nmy video.mp4 1 0\n", r"train\.txt:2: .*paths cannot hold spaces"),
        ("a.mp4 1 dog\n", r"train\.txt:1: the label must be an integer, got 'dog'"),
        ("a.mp4 1 0\n\nb.mp4 1 4\n", r"train\.txt:3: label 4 is out of range \(must be \[0, 4\)\)"),
        ("a.mp4 1 -1\n", r"train\.txt:1: label -1 is out of range"),
        ("\n \n", r"lists no videos: .*train\.txt"),
    ],
)
def test_list_file_errors_name_file_and_line(tmp_path, text, message):
    listing = tmp_path / "train.txt"
    listing.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_video_list(listing, tmp_path, num_classes=4)


def test_list_file_missing_and_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match=r"video list file not found: .*absent\.txt"):
        read_video_list(tmp_path / "absent.txt", tmp_path)
    (tmp_path / "l.txt").write_text("a 1 0\n")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        read_video_list(tmp_path / "l.txt", tmp_path, num_classes=0)


# ---------------------------------------------------------------- clip sampling (hand-computed, released formulas)


def test_train_indices_long_video():
    # span 32 over 4 frames: linspace(e - 32, e, 4) = e-32, e-21.3, e-10.7, e, floored, the end clipped to e - 1
    generator = torch.Generator().manual_seed(0)
    ends = set()
    for _ in range(200):
        index = train_frame_indices(100, 4, 8, generator)
        end = int(index[-1]) + 1
        ends.add(end)
        np.testing.assert_array_equal(index, [end - 32, end - 22, end - 11, end - 1])
    assert min(ends) == 32 and max(ends) == 99 and len(ends) > 50  # end uniform in [32, 99]


def test_train_indices_short_video_and_determinism():
    # 10 frames <= 8 x 2: linspace(0, 10, 10 // 2) = 0, 2.5, 5, 7.5, 10 padded with 10, clipped to 9
    np.testing.assert_array_equal(train_frame_indices(10, 8, 2), [0, 2, 5, 7, 9, 9, 9, 9])
    np.testing.assert_array_equal(train_frame_indices(1, 4, 2), [0, 0, 0, 0])
    a = [train_frame_indices(500, 8, 8, torch.Generator().manual_seed(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])


def test_test_view_indices():
    # 300 frames, 8 x 8: tick = (300 - 64 + 1) / 10 = 23.7, clip k starts at floor(23.7 k), steps 8
    index = view_frame_indices(300, 8, 8, 10)
    np.testing.assert_array_equal(index[:, 0], [0, 23, 47, 71, 94, 118, 142, 165, 189, 213])
    np.testing.assert_array_equal(index - index[:, :1], np.tile(np.arange(0, 64, 8), (10, 1)))
    # shorter than the span: every clip starts at 0 and stops stepping at the last reachable frame
    np.testing.assert_array_equal(view_frame_indices(10, 8, 2, 3), np.tile([0, 2, 4, 6, 8, 8, 8, 8], (3, 1)))


# ---------------------------------------------------------------- transforms


def _bilinear_oracle(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize without antialiasing, one output pixel at a time (cv2 INTER_LINEAR)."""
    h, w = image.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y = max((i + 0.5) * h / out_h - 0.5, 0.0)
            x = max((j + 0.5) * w / out_w - 0.5, 0.0)
            y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                         + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
    return out


def test_resize_short_side_sizes_and_values():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (30, 45))
    x = torch.from_numpy(image).float()[None]
    assert resize_short_side(x, 30) is x  # already the size: untouched, as released
    down = resize_short_side(x, 20)
    assert down.shape == (1, 20, 30)
    np.testing.assert_allclose(down[0].numpy(), _bilinear_oracle(image, 20, 30), atol=1e-3)
    up = resize_short_side(x.transpose(1, 2), 37)  # portrait 45 x 30 -> long side int(37 * 45 / 30) = 55
    assert up.shape == (1, 55, 37)
    np.testing.assert_allclose(up[0].numpy(), _bilinear_oracle(image.T, 55, 37), atol=1e-3)
    assert resize_short_side(torch.zeros(3, 2, 256, 341), 224).shape == (3, 2, 224, int(224 * 341 / 256))


def test_normalize_constant_frames():
    frames = np.full((2, 8, 8, 3), [255, 0, 128], np.uint8)
    spec = ClipSpec(num_frames=2, short_side=8, crop_size=8, scale=(1.0, 1.0), flip=False)
    out = train_clip(frames, spec)
    expected = (np.array([1.0, 0.0, 128 / 255]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out.mean(dim=(1, 2, 3)).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(out.std(dim=(1, 2, 3)).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalize(torch.full((3, 1), 255.0)).numpy()[:, 0],
                               (1.0 - np.array(IMAGENET_MEAN)) / IMAGENET_STD, rtol=1e-6)


def _coordinate_frames(t: int, h: int, w: int) -> np.ndarray:
    """uint8 [t, h, w, 3]: channel 0 the frame index, 1 the column, 2 the row."""
    out = np.zeros((t, h, w, 3), np.uint8)
    out[..., 0] = np.arange(t)[:, None, None]
    out[..., 1] = np.arange(w)[None, None, :]
    out[..., 2] = np.arange(h)[None, :, None]
    return out


def test_train_clip_crop_flip_and_determinism():
    frames = _coordinate_frames(4, 20, 30)
    spec = ClipSpec(num_frames=4, short_side=20, crop_size=12, scale=(1.0, 1.0), flip=True)
    seen = set()
    for seed in range(24):
        out = train_clip(frames, spec, torch.Generator().manual_seed(seed))
        assert out.shape == (3, 4, 12, 12) and out.dtype == torch.float32
        raw = _unnormalise(out).round()
        np.testing.assert_allclose(raw[0, :, 0, 0].numpy(), np.arange(4))  # frames keep their order
        cols, rows = raw[1, 0, 0].numpy(), raw[2, 0, :, 0].numpy()
        flipped = cols[0] > cols[-1]
        left = cols.min()
        np.testing.assert_array_equal(cols, left + (np.arange(12)[::-1] if flipped else np.arange(12)))
        np.testing.assert_array_equal(rows, rows[0] + np.arange(12))
        assert 0 <= left <= 30 - 12 and 0 <= rows[0] <= 20 - 12
        seen.add((bool(flipped), int(left), int(rows[0])))
        again = train_clip(frames, spec, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out, again, rtol=0, atol=0)
    assert {f for f, _, _ in seen} == {False, True} and len(seen) > 12


def test_train_clip_scale_jitter_as_released():
    # short side 16 -> 20, then x[1, 1.25]: int(20 f) x int(30 f); the crop of a coordinate ramp shows the scale
    frames = _coordinate_frames(2, 16, 24)
    spec = ClipSpec(num_frames=2, short_side=20, crop_size=20, scale=(1.25, 1.25), flip=False)
    out = _unnormalise(train_clip(frames, spec, torch.Generator().manual_seed(0)))
    step = np.diff(out[1, 0, 0].numpy()).mean()
    assert out.shape == (3, 2, 20, 20)
    np.testing.assert_allclose(step, 24 / 37, rtol=0.03)  # 24 columns spread over int(30 * 1.25) = 37
    plain = ClipSpec(num_frames=2, short_side=20, crop_size=20, scale=(1.0, 1.0), flip=False)
    step = np.diff(_unnormalise(train_clip(frames, plain))[1, 0, 0].numpy()).mean()
    np.testing.assert_allclose(step, 24 / 30, rtol=0.03)


@pytest.mark.parametrize(("h", "w", "expected"), [(16, 30, [(0, 0), (0, 7), (0, 14)]),
                                                  (31, 16, [(0, 0), (7, 0), (14, 0)]),
                                                  (16, 16, [(0, 0)] * 3)])
def test_test_views_three_crops_by_ten_clips(h, w, expected):
    assert crop_offsets(h, w, 16) == expected
    assert crop_offsets(h, w, 16, crops=1) == expected[1:2]
    spec = ClipSpec(num_frames=3, short_side=16, crop_size=16, test_clips=10, test_crops=3)
    frames = _coordinate_frames(30, h, w)  # 10 clips of 3 frames, one after another
    views = make_views(frames, spec)
    assert views.shape == (30, 3, 3, 16, 16)
    raw = _unnormalise(views.transpose(0, 1)).round().transpose(0, 1)
    for c, (top, left) in enumerate(expected):
        for k in range(10):
            view = raw[c * 10 + k]  # crop-major
            np.testing.assert_array_equal(view[0, :, 0, 0].numpy(), [3 * k, 3 * k + 1, 3 * k + 2])
            np.testing.assert_array_equal(view[1, 0, 0].numpy(), left + np.arange(16))
            np.testing.assert_array_equal(view[2, 0, :, 0].numpy(), top + np.arange(16))
    centre = make_views(frames, ClipSpec(num_frames=3, short_side=16, crop_size=16, test_clips=10, test_crops=1))
    torch.testing.assert_close(centre, views[10:20])


def test_test_views_resize_short_side_to_crop_size():
    frames = _coordinate_frames(2, 32, 48)  # -> 16 x 24: crops at 0, 4, 8
    views = make_views(frames, ClipSpec(num_frames=2, short_side=16, crop_size=16, test_clips=1))
    assert views.shape == (3, 3, 2, 16, 16)
    first_column = _unnormalise(views.transpose(0, 1))[1, :, 0, 0, 0]
    np.testing.assert_allclose(first_column.numpy(), [0.5, 8.5, 16.5], atol=1e-3)  # 2x down: mean of 2 columns
    with pytest.raises(ValueError, match=r"test_clips x num_frames = 2 x 2 frames, got 3"):
        make_views(_coordinate_frames(3, 32, 48), ClipSpec(num_frames=2, short_side=16, crop_size=16, test_clips=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0}, "num_frames must be an int >= 1"),
        ({"sample_rate": 2.0}, "sample_rate must be an int"),
        ({"crop_size": 300}, r"crop_size \(300\) must be <= short_side \(256\)"),
        ({"scale": (0.8, 1.2)}, "scale must be .* 1 <= low <= high"),
        ({"scale": (1.0,)}, "scale must be 2 finite numbers"),
        ({"test_crops": 2}, "test_crops must be 1 .* or 3"),
        ({"flip": 1}, "flip must be a bool"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be > 0"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers"),
    ],
)
def test_clip_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipSpec(**kwargs)


# ---------------------------------------------------------------- datasets on the synthetic set


def test_datasets_read_both_formats(dataset):
    spec = ClipSpec(num_frames=4, sample_rate=2, short_side=36, crop_size=32, test_clips=10)
    labels = None
    for kind in ("frames", "videos"):
        clips = KineticsClips(dataset / f"train_{kind}.txt", dataset, spec, num_classes=4,
                              generator=torch.Generator().manual_seed(0))
        views = KineticsViews(dataset / f"val_{kind}.txt", dataset, spec, num_classes=4)
        assert len(clips) + len(views) == SMALL.videos
        clip, label, name = clips[0]
        assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32 and label == clips.labels[0]
        assert name == clips.entries[0].name and name.startswith(kind)
        view, label, _ = views[0]
        assert view.shape == (30, 3, 4, 32, 32) and label == views.labels[0]
        labels = labels or clips.labels
        assert clips.labels == labels  # the two lists hold the same videos
    # the same video through JPEG frames and through H.264 gives nearly the same test views, view for view
    a = _unnormalise(KineticsViews(dataset / "val_frames.txt", dataset, spec)[0][0].transpose(0, 1))
    b = _unnormalise(KineticsViews(dataset / "val_videos.txt", dataset, spec)[0][0].transpose(0, 1))
    aligned, shifted = (a - b).abs().mean(), (a - b.roll(1, dims=1)).abs().mean()
    assert aligned < 3.5 and aligned < 0.5 * shifted, (aligned, shifted)
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=3)))
    assert batch[0].shape == (3, 3, 4, 32, 32) and batch[1].tolist() == clips.labels[:3] and len(batch[2]) == 3


def test_dataset_errors_name_the_file(dataset, tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("frames/video0000 24 0\nvideos/missing.mp4 24 1\n")
    clips = KineticsClips(listing, dataset, ClipSpec(num_frames=2, short_side=32, crop_size=32))
    assert clips[0][0].shape == (3, 2, 32, 32)
    with pytest.raises(DatasetError, match=r"video not found: .*videos/missing\.mp4"):
        clips[1]
    listing.write_text("frames/video0000 24 4\n")
    with pytest.raises(DatasetError, match=r"l\.txt:1: label 4 is out of range"):
        KineticsViews(listing, dataset, num_classes=4)
    with pytest.raises(TypeError, match="spec must be a ClipSpec"):
        KineticsViews(listing, dataset, spec={"num_frames": 8})
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        KineticsClips(listing, dataset, generator=0)


# ---------------------------------------------------------------- the synthetic set


def test_generated_layout(dataset):
    assert (dataset / "classes.txt").read_text() == "0 up\n1 down\n2 grow\n3 shrink\n"
    train = read_video_list(dataset / "train_frames.txt", dataset, num_classes=4)
    val = read_video_list(dataset / "val_frames.txt", dataset, num_classes=4)
    assert len(train) + len(val) == SMALL.videos
    assert sorted(e.label for e in val) == [0, 1, 2, 3]  # half of each class of 2
    assert [e.name.replace("frames/", "videos/") + ".mp4" for e in train] == \
        [e.name for e in read_video_list(dataset / "train_videos.txt", dataset)]
    for entry in train[:2]:
        assert VideoReader(entry.path).num_frames == SMALL.frames
        assert VideoReader(dataset / "videos" / f"{entry.path.name}.mp4").num_frames == SMALL.frames


def test_generated_set_is_deterministic(dataset, tmp_path):
    again = generate(tmp_path / "again", SyntheticVideoSpec(**{**SMALL.__dict__, "formats": ("frames",)}))
    for name in ("video0000", "video0005"):
        np.testing.assert_array_equal(read_frames(again / "frames" / name), read_frames(dataset / "frames" / name))


def test_pairs_are_exact_time_reversals():
    spec = SyntheticVideoSpec(frames=20, height=32, width=40, noise=0.0, formats=("frames",))
    p = sample_params(np.random.default_rng(5), spec)
    up = render_video("up", p, spec)
    shifted = type(p)(**{**p.__dict__, "y0": p.y0 - p.speed * (spec.frames - 1)})
    down = render_video("down", shifted, spec)
    assert np.abs(down.astype(int) - up[::-1]).max() <= 1  # float rounding of the positions only
    assert np.abs(render_video("shrink", p, spec).astype(int) - render_video("grow", p, spec)[::-1]).max() <= 1
    assert not np.array_equal(up, up[::-1])
    with pytest.raises(ValueError, match="label must be one of"):
        render_video("left", p, spec)


def _frame_features(video: np.ndarray) -> np.ndarray:
    """Per frame [T, 5]: the bright disc's vertical and horizontal circular position (cos, sin) and its area."""
    mask = video.astype(np.float64).mean(axis=-1) > 130  # disc >= 170, background <= 90 (+ noise)
    h, w = mask.shape[1:]
    ang_y = np.exp(2j * np.pi * np.arange(h) / h)
    ang_x = np.exp(2j * np.pi * np.arange(w) / w)
    zy = (mask.sum(axis=2) * ang_y).sum(axis=1)
    zx = (mask.sum(axis=1) * ang_x).sum(axis=1)
    zy, zx = zy / np.abs(zy), zx / np.abs(zx)
    return np.stack([zy.real, zy.imag, zx.real, zx.imag, mask.sum(axis=(1, 2)) / (h * w)], axis=1)


def _nearest_mean_accuracy(train_x, train_y, test_x, test_y) -> float:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    centres = np.stack([((train_x[train_y == c] - mu) / sd).mean(0) for c in range(4)])
    pred = ((((test_x - mu) / sd)[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    return float((pred == test_y).mean())


def test_frame_averaging_cannot_separate_a_pair_but_frame_differences_can():
    spec = SyntheticVideoSpec(frames=16, height=32, width=32, radius=(3.0, 7.0), noise=6.0, formats=("frames",))
    rng = np.random.default_rng(11)
    labels = np.arange(160) % 4
    feats = [_frame_features(make_video(spec.classes[y], rng, spec)) for y in labels]
    pooled = np.stack([f.mean(0) for f in feats])  # order-blind: a per-frame model averaged over frames
    step_y = [np.angle(f[1:, 0] + 1j * f[1:, 1]) - np.angle(f[:-1, 0] + 1j * f[:-1, 1]) for f in feats]
    diffs = np.stack([[np.angle(np.exp(1j * s)).mean(), np.diff(f[:, 4]).mean()] for s, f in zip(step_y, feats,
                                                                                                   strict=True)])
    train, test = slice(0, 80), slice(80, 160)
    acc_pooled = _nearest_mean_accuracy(pooled[train], labels[train], pooled[test], labels[test])
    acc_diffs = _nearest_mean_accuracy(diffs[train], labels[train], diffs[test], labels[test])
    assert acc_diffs >= 0.95, acc_diffs
    assert acc_pooled <= 0.65, acc_pooled  # the pair inside each family is at chance: at best ~50% of 4 classes


def test_synthetic_spec_validation_and_cli(tmp_path, capsys):
    for kwargs, message in [({"classes": ("up", "left")}, "classes must be distinct names"),
                            ({"videos": 5}, "videos must be >= 2 per class"),
                            ({"height": 33, "formats": ("mp4",)}, "even height and width"),
                            ({"radius": (3.0, 30.0)}, "must fit the frame"),
                            ({"speed": (1.0, 30.0)}, "must be < height / 2"),
                            ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
                            ({"formats": ("gif",)}, "formats must be distinct names"),
                            ({"image_format": "bmp"}, "image_format must be 'jpg' or 'png'")]:
        with pytest.raises(ValueError, match=message):
            SyntheticVideoSpec(**kwargs)
    assert main(["--out", str(tmp_path / "cli"), "--videos", "4", "--frames", "6", "--height", "16", "--width",
                 "16", "--radius", "2", "4", "--speed", "0.5", "1", "--classes", "up,down",
                 "--image-format", "png"]) == 0
    assert "wrote 4 videos (2 classes" in capsys.readouterr().out
    assert len(read_video_list(tmp_path / "cli" / "train_videos.txt", tmp_path / "cli", num_classes=2)) == 2
    assert VideoReader(tmp_path / "cli" / "frames" / "video0003").read().shape == (6, 16, 16, 3)
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "bad"), "--classes", "up,sideways"])
    assert info.value.code == 2 and "classes must be distinct names" in capsys.readouterr().err
