"""Malformed dataset files: every one is refused with a DatasetError (a ValueError) naming the file.

The corpus is generated in ``tmp_path`` from a small synthetic MS-TCN dataset: each case
replaces one file (a video's features, ``mapping.txt``, a groundTruth file, a split bundle)
and the reader must say which file is wrong and how, never raise EOFError, IndexError,
IsADirectoryError, UnicodeDecodeError, MemoryError or OverflowError, nor allocate what a
forged header claims.
"""

from __future__ import annotations

import pickle
import resource
from pathlib import Path

import numpy as np
import pytest

from fastlocal.data import DatasetError, MSTCNDataset, read_bundle, read_features, read_labels, read_mapping
from fastlocal.data.mstcn import write_labels
from fastlocal.data.synthetic import SyntheticSpec, generate

SMALL = SyntheticSpec(videos=4, min_length=30, max_length=40, classes=8, dim=8, splits=2, seed=3)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return generate(tmp_path / "syn", SMALL)


def _first_video(root: Path) -> str:
    return read_bundle(root / "splits" / "test.split1.bundle")[0]


def _header(path: Path, header: dict, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


FEATURES = {
    "empty": (lambda p: p.write_bytes(b""), r"is an empty file \(0 bytes\)"),
    "zero-width": (lambda p: np.save(p, np.zeros((0, 35), np.float32)), r"D >= 1 channels.*shape \(0, 35\)"),
    "zero-frames": (lambda p: np.save(p, np.zeros((8, 0), np.float32)), r"T >= 1 frames.*shape \(8, 0\)"),
    "one-d": (lambda p: np.save(p, np.zeros(5, np.float32)), r"\[D, T\] array.*shape \(5,\)"),
    "three-d": (lambda p: np.save(p, np.zeros((2, 3, 4), np.float32)), r"\[D, T\] array"),
    "huge-header": (
        lambda p: _header(p, {"descr": "<f4", "fortran_order": False, "shape": (4, 10**12)}, bytes(16)),
        r"truncated: its header says shape \(4, 1000000000000\) float32 \(16000000000000 bytes",
    ),
    "huge-dims": (
        lambda p: _header(p, {"descr": "<f8", "fortran_order": False, "shape": (2**62, 2**62)}, bytes(16)),
        "truncated",
    ),
    "truncated-data": (lambda p: (np.save(p, np.ones((8, 35), np.float32)), _truncate(p, 500)), "truncated"),
    "truncated-header": (
        lambda p: (np.save(p, np.ones((8, 35), np.float32)), _truncate(p, 30)),
        "truncated or not a .npy file: its header claims",
    ),
    "magic-only": (lambda p: p.write_bytes(b"\x93NUMPY\x01"), "not a .npy"),
    "text": (lambda p: p.write_text("0.1 0.2 0.3\n" * 10), "not a .npy"),
    "npz": (lambda p: np.savez(open(p, "wb"), x=np.zeros((8, 35))), "not a .npy"),  # noqa: SIM115
    "pickle": (lambda p: p.write_bytes(pickle.dumps(np.zeros((8, 35)))), "not a .npy"),
    "objects": (lambda p: np.save(p, np.array([[None, 1]], dtype=object)), "holds Python objects"),
    "strings": (lambda p: np.save(p, np.array([["a", "b"]])), "real numbers"),
    "complex": (lambda p: np.save(p, np.zeros((8, 35), np.complex64)), "real numbers"),
    "bad-header": (
        lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4 }\n"),
        "not a readable .npy array file",
    ),
    "unknown-version": (lambda p: p.write_bytes(b"\x93NUMPY\x07\x00" + bytes(100)), "not a .npy"),
}


@pytest.mark.parametrize("case", FEATURES)
def test_malformed_features_name_the_file(case: str, root: Path) -> None:
    make, what = FEATURES[case]
    dataset = MSTCNDataset(root, 1, "test")
    path = root / "features" / f"{dataset.names[0]}.npy"
    path.unlink()
    make(path)
    # A forged header must not be allocated: at most 4 GiB of address space beyond what is mapped now.
    limit = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    cap = mapped + (4 << 30)
    if limit[1] != resource.RLIM_INFINITY:
        cap = min(cap, limit[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, limit[1]))
    try:
        for call in (lambda: dataset[0], dataset.feature_dim, lambda: read_features(path)):
            with pytest.raises(DatasetError, match=what) as info:
                call()
            assert str(path) in str(info.value)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limit)
    assert isinstance(info.value, ValueError)


def test_features_directory_and_fortran_order(root: Path) -> None:
    dataset = MSTCNDataset(root, 1, "test")
    path = root / "features" / f"{dataset.names[0]}.npy"
    expected = np.load(path)
    np.save(path, np.asfortranarray(expected.astype(np.float64)))  # another dtype and order: read the same
    np.testing.assert_array_equal(dataset[0].features, expected.T)
    path.unlink()
    path.mkdir()
    with pytest.raises(DatasetError, match=r"features file not found: .*\(a directory\)"):
        dataset[0]


def _latin1_line(path: Path, line: int) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = lines[line - 1] + "\xe9"
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")


@pytest.mark.parametrize(
    ("target", "line"),
    [("mapping.txt", 3), ("groundTruth", 7), ("splits/test.split1.bundle", 1)],
)
def test_non_utf8_text_files_name_the_file_and_line(target: str, line: int, root: Path) -> None:
    path = root / "groundTruth" / f"{_first_video(root)}.txt" if target == "groundTruth" else root / target
    _latin1_line(path, line)
    offset = sum(len(x) + 1 for x in path.read_bytes().split(b"\n")[: line - 1]) + len(
        path.read_bytes().split(b"\n")[line - 1]) - 1
    with pytest.raises(DatasetError, match=rf":{line}: not UTF-8 text \(byte 0xe9 at offset {offset}") as info:
        MSTCNDataset(root, 1, "test")[0]
    assert str(path) in str(info.value)


def test_byte_order_mark_is_accepted(root: Path) -> None:
    mapping = root / "mapping.txt"
    mapping.write_bytes(b"\xef\xbb\xbf" + mapping.read_bytes())
    assert read_mapping(mapping)[0] == "background"


@pytest.mark.parametrize(
    ("target", "what"),
    [("mapping.txt", "class mapping file"), ("groundTruth", "ground-truth file"), ("bundle", "split file")],
)
def test_directories_and_unreadable_text_files(target: str, what: str, root: Path, monkeypatch) -> None:
    path = {
        "mapping.txt": root / "mapping.txt",
        "groundTruth": root / "groundTruth" / f"{_first_video(root)}.txt",
        "bundle": root / "splits" / "test.split1.bundle",
    }[target]
    read = {"mapping.txt": read_mapping, "groundTruth": lambda p: read_labels(p, {}), "bundle": read_bundle}[target]
    path.unlink()
    path.mkdir()
    with pytest.raises(DatasetError, match=rf"{what} not found: .*\(a directory\)"):
        read(path)
    path.rmdir()
    path.write_text("0 a\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # the tests run as root: chmod would not stop a read
    with pytest.raises(DatasetError, match=f"cannot read {what} .*: Permission denied") as info:
        read(path)
    assert str(path) in str(info.value)


def test_argument_types(root: Path) -> None:
    with pytest.raises(TypeError, match="root"):
        MSTCNDataset(3)
    with pytest.raises(TypeError, match="split"):
        MSTCNDataset(root, 1.0)
    with pytest.raises(TypeError, match="path"):
        read_mapping(None)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 2\)"):
        write_labels(root / "x.txt", [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match="labels must be a 1-D sequence of class indices"):
        write_labels(root / "x.txt", [0.5], ["a", "b"])
