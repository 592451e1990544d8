"""fastlocal.selective: sampling, selective backprop (ETAD), long memory (TALLFormer).

The oracle of :func:`selective_encode` is plain backprop through the same encoder on the
sampled clips only, encoded in the same chunks after the same ``torch.manual_seed``: its
parameter gradients (with dropout active), its features and, when the clips require grad,
their gradients must be equal. Encoders are tiny MLPs so the whole file runs in seconds.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastlocal
from fastlocal import selective
from fastlocal.selective import STRATEGIES, LongMemory, SelectiveEncoder, sample_indices, selective_encode

N, CLIP, FEAT = 10, (2, 3, 4), 5
HAS_CUDA = torch.cuda.is_available()


def make_encoder(dropout: float = 0.3, seed: int = 0) -> nn.Module:
    """``[n, 2, 3, 4]`` clips -> ``[n, 5]`` features."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(24, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, FEAT))


def make_clips(n: int = N, seed: int = 1, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(n, *CLIP, generator=torch.Generator().manual_seed(seed)).requires_grad_(requires_grad)


def upstream(n: int = N) -> torch.Tensor:
    """A fixed incoming feature gradient (loss = sum(features * upstream))."""
    return torch.randn(n, FEAT, generator=torch.Generator().manual_seed(2))


def param_grads(module: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad(set_to_none=True)
    return grads


def batch_sizes(module: nn.Module) -> list[int]:
    """Records the batch size of every call of ``module`` (appended in call order)."""
    sizes: list[int] = []
    module.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    return sizes


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------
# sample_indices
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("n", "ratio", "k"),
    [(32, 0.05, 2), (32, 0.1, 3), (10, 0.3, 3), (5, 0.5, 3), (1, 0.01, 1), (7, 1.0, 7), (100, 0.001, 1)],
)
def test_sample_count_sorted_distinct(strategy: str, n: int, ratio: float, k: int) -> None:
    for seed in range(20):
        index = sample_indices(n, ratio, strategy, seeded(seed))
        assert index.dtype == torch.long and index.shape == (k,)
        assert (index.diff() > 0).all(), index  # sorted and distinct
        assert index.min() >= 0 and index.max() < n


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_ratio_one_is_everything_and_empty_n(strategy: str) -> None:
    assert sample_indices(9, 1.0, strategy, seeded(0)).tolist() == list(range(9))
    assert sample_indices(0, 0.5, strategy).shape == (0,)


def test_sample_strategies_shape() -> None:
    n, ratio = 40, 0.1  # k = 4, stride 10
    grids, blocks, randoms = set(), set(), set()
    for seed in range(200):
        grid = sample_indices(n, ratio, "grid", seeded(seed))
        assert set(grid.diff().tolist()) <= {10}
        block = sample_indices(n, ratio, "block", seeded(seed))
        assert (block.diff() == 1).all()
        grids.add(int(grid[0]))
        blocks.add(int(block[0]))
        randoms.update(sample_indices(n, ratio, "random", seeded(seed)).tolist())
    assert grids == set(range(10))  # every phase of the stride
    assert blocks == set(range(n - 4 + 1))  # every offset of the run
    assert randoms == set(range(n))  # every clip gets sampled
    # A stride that is not an integer: positions n/k apart, rounded down.
    assert set(sample_indices(10, 0.3, "grid", seeded(3)).diff().tolist()) <= {3, 4}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_reproducible(strategy: str) -> None:
    a = sample_indices(50, 0.2, strategy, seeded(7))
    assert torch.equal(a, sample_indices(50, 0.2, strategy, seeded(7)))
    torch.manual_seed(3)
    b = sample_indices(50, 0.2, strategy)  # the global RNG
    torch.manual_seed(3)
    assert torch.equal(b, sample_indices(50, 0.2, strategy))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_huge_n_is_cheap(strategy: str) -> None:
    """n = 10**13 clips with a tiny ratio: a few indices, without anything of size n (80 TB before)."""
    start = time.perf_counter()
    for ratio, k in [(1e-13, 1), (1e-12, 10), (1e-8, 100_000)]:
        index = sample_indices(10**13, ratio, strategy, seeded(0))
        assert index.shape == (k,) and (index.diff() > 0).all() and index.min() >= 0 and index.max() < 10**13
    assert time.perf_counter() - start < 5
    assert sample_indices(2**53, 2.0**-50, strategy, seeded(1)).shape == (8,)  # the largest n


def test_sample_random_sparse_draws_are_uniform_and_reproducible() -> None:
    """Above 2**16 clips, "random" draws k << n indices without a permutation of n."""
    n, k = 2**20, 8
    first = sample_indices(n, k / n, "random", seeded(5))
    assert torch.equal(first, sample_indices(n, k / n, "random", seeded(5)))
    draws = torch.cat([sample_indices(n, k / n, "random", seeded(s)) for s in range(2000)])
    assert all((d.diff() > 0).all() for d in draws.view(-1, k))
    counts = torch.bincount(draws // (n // 16), minlength=16).float()  # 1000 expected per 16th of the range
    assert counts.min() > 850 and counts.max() < 1150, counts
    # Dense and sparse regimes meet: k = n / 4 still comes from a permutation; above, sparse draws.
    assert sample_indices(400_000, 0.2, "random", seeded(0)).unique().numel() == 80_000


# ----------------------------------------------------------------------------------------
# selective_encode
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize(("strategy", "ratio"), [(s, 0.3) for s in STRATEGIES] + [("random", 1.0)])
def test_gradients_equal_full_backprop_on_sampled_clips(strategy: str, ratio: float, chunk_size: int | None) -> None:
    """With dropout active, gradients equal plain backprop through the sampled clips (same seed, same chunks)."""
    encoder = make_encoder(dropout=0.3)
    clips, weight = make_clips(requires_grad=True), upstream()
    index = sample_indices(N, ratio, strategy, seeded(11))

    torch.manual_seed(5)
    features = selective_encode(encoder, clips, ratio, strategy=strategy, chunk_size=chunk_size, generator=seeded(11))
    (features * weight).sum().backward()
    got, got_clips = param_grads(encoder), clips.grad.clone()

    reference_clips = clips.detach()[index].requires_grad_(True)
    torch.manual_seed(5)  # the sampled chunks are encoded first, so they see the same dropout masks
    reference = torch.cat([encoder(c) for c in reference_clips.split(chunk_size or N)])
    (reference * weight[index]).sum().backward()
    expected = param_grads(encoder)

    torch.testing.assert_close(features[index], reference)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    torch.testing.assert_close(got_clips[index], reference_clips.grad)
    unsampled = torch.ones(N, dtype=torch.bool)
    unsampled[index] = False
    assert (got_clips[unsampled] == 0).all()
    if ratio == 1.0 and chunk_size is None:  # all clips sampled: exactly full backprop
        torch.manual_seed(5)
        (encoder(clips.detach()) * weight).sum().backward()
        for g, e in zip(got, param_grads(encoder), strict=True):
            torch.testing.assert_close(g, e)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gradients_equal_on_cuda_with_dropout() -> None:
    """The CUDA generator's state is replayed too: dropout masks on the GPU match the forward."""
    encoder = make_encoder(dropout=0.5).cuda()
    clips, weight = make_clips().cuda(), upstream().cuda()
    index = sample_indices(N, 0.5, "random", seeded(3))
    torch.manual_seed(9)
    features = selective_encode(encoder, clips, 0.5, chunk_size=2, generator=seeded(3))
    (features * weight).sum().backward()
    got = param_grads(encoder)
    torch.manual_seed(9)
    reference = torch.cat([encoder(c) for c in clips[index.cuda()].split(2)])
    (reference * weight[index.cuda()]).sum().backward()
    torch.testing.assert_close(features[index.cuda()], reference)
    for g, e in zip(got, param_grads(encoder), strict=True):
        torch.testing.assert_close(g, e)


def test_autograd_grad_and_clips_without_grad() -> None:
    """Parameters are inputs of the function: ``torch.autograd.grad`` works; clips get no gradient."""
    encoder, clips, weight = make_encoder(), make_clips(), upstream()
    torch.manual_seed(0)
    loss = (selective_encode(encoder, clips, 0.5, generator=seeded(1)) * weight).sum()
    grads = torch.autograd.grad(loss, list(encoder.parameters()))
    torch.manual_seed(0)
    (selective_encode(encoder, clips, 0.5, generator=seeded(1)) * weight).sum().backward()
    for g, e in zip(grads, param_grads(encoder), strict=True):
        torch.testing.assert_close(g, e)
    assert clips.grad is None and not clips.requires_grad


def test_backward_reencodes_only_sampled_chunks() -> None:
    encoder = make_encoder()
    sizes = batch_sizes(encoder)
    features = selective_encode(encoder, make_clips(), 0.5, chunk_size=2, generator=seeded(0))  # 5 sampled clips
    assert sizes == [2, 2, 1, 2, 2, 1]  # forward: sampled chunks, then the others
    sizes.clear()
    features.sum().backward()
    assert sizes == [2, 2, 1]  # backward: the sampled chunks only


def test_frozen_encoder_and_clips_requiring_grad() -> None:
    encoder = make_encoder(dropout=0.0).requires_grad_(False)
    sizes = batch_sizes(encoder)
    clips = make_clips()
    assert not selective_encode(encoder, clips, 0.3).requires_grad  # nothing to differentiate: plain encoding
    assert sizes == [N]
    clips.requires_grad_(True)
    index = sample_indices(N, 0.3, "random", seeded(4))
    (selective_encode(encoder, clips, 0.3, generator=seeded(4)) * upstream()).sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    sampled = clips.detach()[index].requires_grad_(True)
    (encoder(sampled) * upstream()[index]).sum().backward()
    expected = torch.zeros_like(clips)
    expected[index] = sampled.grad
    torch.testing.assert_close(clips.grad, expected)


def test_outputs_equal_plain_encoding_forward_train_eval() -> None:
    encoder = make_encoder(dropout=0.0)
    clips = make_clips()
    with torch.no_grad():
        plain = encoder(clips)
        forward = selective_encode(encoder, clips, 0.3, chunk_size=3)
    train = selective_encode(encoder, clips, 0.3, chunk_size=3)
    module = SelectiveEncoder(encoder, 0.3, chunk_size=4)
    module_train = module(clips)
    module_eval = module.eval()(clips)
    torch.testing.assert_close(forward, plain)
    torch.testing.assert_close(train, plain)
    torch.testing.assert_close(module_train, plain)
    torch.testing.assert_close(module_eval, plain)
    assert train.requires_grad and module_train.requires_grad
    assert not forward.requires_grad and not module_eval.requires_grad


def test_autocast_replayed_in_backward() -> None:
    encoder, clips, weight = make_encoder(dropout=0.0), make_clips(), upstream()
    index = sample_indices(N, 0.5, "grid", seeded(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = selective_encode(encoder, clips, 0.5, strategy="grid", generator=seeded(0))
    (features.float() * weight).sum().backward()
    got = param_grads(encoder)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = encoder(clips[index])
    (reference.float() * weight[index]).sum().backward()
    assert features.dtype == torch.bfloat16
    for g, e in zip(got, param_grads(encoder), strict=True):
        torch.testing.assert_close(g, e)


def test_batchnorm_in_training_mode_warns_once() -> None:
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(24, 8), nn.BatchNorm1d(8))
    with pytest.warns(UserWarning, match="BatchNorm"):
        selective_encode(encoder, make_clips(), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selective_encode(encoder, make_clips(), 0.5)  # once per encoder
        frozen = nn.Sequential(nn.Flatten(), nn.Linear(24, 8), nn.BatchNorm1d(8))
        frozen[2].eval()
        selective_encode(frozen, make_clips(), 0.5)  # BatchNorm in eval mode: no warning


# ----------------------------------------------------------------------------------------
# LongMemory
# ----------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16]
STORAGES = [
    pytest.param("ram", id="ram"),
    pytest.param("dir", id="dir"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")]),
]


def make_memory(storage: str, tmp_path: Path, dtype: torch.dtype = torch.float32, **kw: object) -> LongMemory:
    return LongMemory(tmp_path / "memory" if storage == "dir" else storage, dtype, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("storage", STORAGES)
def test_memory_round_trip(storage: str, dtype: torch.dtype, tmp_path: Path) -> None:
    memory = make_memory(storage, tmp_path, dtype)
    features = torch.randn(6, 3, 4)
    assert memory.init("video/1", features) is True  # any str is a key, "/" included
    features.zero_()  # init copies
    expected = memory.read("video/1").float()
    assert memory.shape("video/1") == (6, 3, 4) and "video/1" in memory and memory.keys() == ["video/1"]
    assert "video/2" not in memory
    assert memory.read("video/1").dtype == dtype and (expected != 0).all()

    rows = torch.randn(2, 3, 4)
    assert memory.write("video/1", [4, 1], rows) is True
    expected[[4, 1]] = rows.to(dtype).float()
    torch.testing.assert_close(memory.read("video/1").float(), expected, rtol=0, atol=0)
    torch.testing.assert_close(memory.read("video/1", torch.tensor([1, 4, 1])).float(), expected[[1, 4, 1]])
    view = memory.read("video/1", [0])
    view.fill_(123.0)  # read returns a copy
    torch.testing.assert_close(memory.read("video/1", [0]).float(), expected[[0]])
    memory.write("video/1", None, torch.ones(6, 3, 4))
    assert (memory.read("video/1") == 1).all()
    memory.flush()


@pytest.mark.parametrize("dtype", DTYPES)
def test_directory_memory_reopens_with_its_files(dtype: torch.dtype, tmp_path: Path) -> None:
    features = torch.randn(8, 16)
    first = LongMemory(str(tmp_path), dtype)
    first.init("a", features)
    first.init("b", features[:3])
    first.write("b", [2], torch.zeros(1, 16))
    first.flush()

    reopened = LongMemory(tmp_path, dtype)
    assert reopened.keys() == ["a", "b"]
    torch.testing.assert_close(reopened.read("a"), features.to(dtype), rtol=0, atol=0)
    assert (reopened.read("b", [2]) == 0).all()
    stored = np.load(tmp_path / "a.npy")  # one plain .npy file per video, in the storage dtype
    assert stored.dtype == np.dtype(str(dtype).removeprefix("torch.")) and stored.shape == (8, 16)
    assert (tmp_path / "a.npy").stat().st_size < 8 * 16 * dtype.itemsize + 256
    with pytest.raises(ValueError, match="dtype"):
        LongMemory(tmp_path, torch.float16 if dtype == torch.float32 else torch.float32).read("a")


def _crash_in_write(stage: str, root: str) -> None:
    """Child process: die (no cleanup, lock released by the kernel) in the middle of one write or init."""
    if stage == "rows":  # half of the rows written in place, then killed

        def half_then_die(array: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
            half = index.size // 2
            array[index[:half]] = values[:half]
            array[index[half]][: array.shape[1] // 2] = values[half][: array.shape[1] // 2]  # and half a row
            os._exit(17)

        selective._store_rows = half_then_die
    elif stage == "journal":  # killed while saving the old rows: a torn journal

        def half_then_die(fd: int, data: bytes) -> None:
            os.write(fd, data[: len(data) // 2])
            os._exit(17)

        selective._write_all = half_then_die
    else:  # init: killed at the fsync before the rename
        os.fsync = lambda fd: os._exit(17)
    memory = LongMemory(root)
    if stage == "init":
        memory.init("b", torch.full((3, 4), 9.0))
    else:
        memory.write("a", [0, 2, 5], torch.full((3, 4), 9.0))


@pytest.mark.parametrize("stage", ["rows", "journal", "init"])
def test_directory_memory_after_crash_mid_write(stage: str, tmp_path: Path) -> None:
    old = torch.arange(24.0).reshape(6, 4)
    LongMemory(tmp_path).init("a", old)
    child = multiprocessing.get_context("fork").Process(target=_crash_in_write, args=(stage, str(tmp_path)))
    child.start()
    child.join(30)
    assert child.exitcode == 17
    if stage == "init":
        assert any(p.suffix == ".tmp" for p in tmp_path.iterdir())  # the crashed init's half-done file
    else:
        assert (tmp_path / "a.npy.journal").stat().st_size > 0  # the crashed write's journal
    if stage == "rows":
        on_disk = np.load(tmp_path / "a.npy")  # half written: row 0, and half of row 2
        assert (on_disk[0] == 9).all() and (on_disk[2, :2] == 9).all() and (on_disk[2, 2:] != 9).all()

    memory = LongMemory(tmp_path)
    assert memory.keys() == ["a"]  # a crashed init leaves no key, the leftover temp file is not a key
    assert memory.shape("a") == (6, 4)
    torch.testing.assert_close(memory.read("a"), old, rtol=0, atol=0)  # the old array, whole: rolled back
    assert not (tmp_path / "a.npy.journal").exists() or (tmp_path / "a.npy.journal").stat().st_size == 0
    assert memory.write("a", [1], torch.zeros(1, 4))
    assert (memory.read("a", [1]) == 0).all() and torch.equal(memory.read("a", [0, 2, 3]), old[[0, 2, 3]])


def _write_versions_forever(root: str) -> None:
    """Child process: write versions 1, 2, 3, ... of a whole array (rows in a shuffled order) until killed."""
    memory = LongMemory(root)
    generator = torch.Generator().manual_seed(0)
    for version in range(1, 1_000_000):
        # numpy builds the rows: a large torch.full would use the OpenMP pool, which hangs after fork
        rows = torch.from_numpy(np.full((256, 2048), version, np.float32))
        memory.write("a", torch.randperm(256, generator=generator), rows)


def test_directory_memory_killed_at_random_times(tmp_path: Path) -> None:
    """SIGKILL a process that keeps overwriting every row: the array always holds one whole version."""
    LongMemory(tmp_path).init("a", torch.zeros(256, 2048))
    context = multiprocessing.get_context("fork")
    seen = []
    for delay in (0.15, 0.23, 0.31, 0.47):
        child = context.Process(target=_write_versions_forever, args=(str(tmp_path),))
        child.start()
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        array = LongMemory(tmp_path).read("a")
        assert (array == array[0, 0]).all(), f"torn write after SIGKILL: values {array.unique().tolist()[:8]}"
        seen.append(float(array[0, 0]))
    assert max(seen) > 0  # the children did write


def _write_rows(root: str, rows: list[int], durable: bool, barrier: object) -> None:
    memory = LongMemory(root, durable=durable)
    barrier.wait()
    for i, row in enumerate(rows):
        if i % 10 == 9 and i + 1 < len(rows):  # some writes of two rows
            continue
        if i % 10 == 8:
            memory.write("a", [row, rows[i + 1]], torch.tensor([[row + 1.0] * 64, [rows[i + 1] + 1.0] * 64]))
        else:
            memory.write("a", [row], torch.full((1, 64), row + 1.0))


@pytest.mark.parametrize(("processes", "rows_each", "durable"), [(2, 100, False), (4, 100, False), (2, 30, True)])
def test_directory_memory_concurrent_writers_lose_nothing(
    processes: int, rows_each: int, durable: bool, tmp_path: Path
) -> None:
    """Processes writing distinct rows of one key at the same time: every row must hold its write."""
    n = processes * rows_each
    LongMemory(tmp_path).init("a", torch.zeros(n, 64))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    rows = torch.randperm(n, generator=seeded(0)).tolist()
    children = [
        context.Process(target=_write_rows, args=(str(tmp_path), rows[p::processes], durable, barrier))
        for p in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0] * processes
    got = LongMemory(tmp_path).read("a")
    expected = (torch.arange(n, dtype=torch.float32) + 1).unsqueeze(1).expand(n, 64)
    lost = (got != expected).any(dim=1).nonzero().flatten().tolist()
    assert not lost, f"{len(lost)} of {n} rows lost"


class _WriteDataset(torch.utils.data.Dataset):
    def __init__(self, memory: LongMemory, n: int) -> None:
        self.memory, self.n = memory, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.memory.write("a", [i], torch.full((1, 8), float(i + 1)))
        return i


def test_directory_memory_written_by_dataloader_workers(tmp_path: Path) -> None:
    memory = LongMemory(tmp_path)
    memory.init("a", torch.zeros(200, 8))
    loader = torch.utils.data.DataLoader(_WriteDataset(memory, 200), batch_size=None, num_workers=2)
    assert sorted(loader) == list(range(200))
    assert torch.equal(memory.read("a")[:, 0], torch.arange(1.0, 201.0))


def test_directory_memory_flush_and_durable(tmp_path: Path) -> None:
    memory = LongMemory(tmp_path, durable=True)
    memory.init("a", torch.zeros(4, 3))
    memory.write("a", [1, 3], torch.ones(2, 3))
    memory.flush()
    memory.flush()  # nothing written since: still fine
    assert torch.equal(LongMemory(tmp_path).read("a")[:, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.journal", "a.npy.lock"]
    assert (tmp_path / "a.npy.journal").stat().st_size == 0


def test_directory_memory_journal_of_a_removed_array(tmp_path: Path) -> None:
    """A crashed write's journal whose array was then deleted by hand: init discards it, with a warning."""
    memory = LongMemory(tmp_path)
    memory.init("a", torch.zeros(3, 2))
    old = np.zeros((1, 2), np.float32)
    (tmp_path / "a.npy.journal").write_bytes(selective._journal_bytes((3, 2), old.dtype, np.array([0]), old))
    (tmp_path / "a.npy").unlink()
    with pytest.warns(UserWarning, match="cannot be rolled back"):
        memory.init("a", torch.ones(3, 2))
    assert (memory.read("a") == 1).all() and (tmp_path / "a.npy.journal").stat().st_size == 0


# ----------------------------------------------------------------------------------------
# Directory memory: file names, foreign and malformed files
# ----------------------------------------------------------------------------------------


def test_directory_memory_key_file_names(tmp_path: Path) -> None:
    memory = LongMemory(tmp_path)
    names = {
        "video/1": "video%2F1.npy",
        "A B": "A B.npy",
        "50%": "50%25.npy",
        "a\nb": "a%0Ab.npy",
        "é~(x).mp4": "é~(x).mp4.npy",
        ".": "..npy",
        "x.npy": "x.npy.npy",
    }
    for i, key in enumerate(names):
        memory.init(key, torch.full((2, 3), float(i)))
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == sorted(names.values())
    assert memory.keys() == sorted(names)
    for i, key in enumerate(names):
        assert key in memory and (memory.read(key) == i).all()


def test_directory_memory_foreign_files_keys_agree_with_in(tmp_path: Path) -> None:
    for name in ("A B", "A%20B", "50%", "video%2F1", "ok", "lower%2f"):
        np.save(tmp_path / f"{name}.npy", np.full((2, 3), 1.0, np.float32))
    (tmp_path / "notes.txt").write_text("not a key")
    with pytest.warns(UserWarning, match="3 .npy file.*not keys of this memory"):
        memory = LongMemory(tmp_path)
    assert memory.keys() == ["A B", "ok", "video/1"]
    keys = memory.keys()
    for key in ["A B", "A%20B", "50%", "video/1", "video%2F1", "ok", "lower/", "lower%2f", "notes", "A%2520B"]:
        assert (key in memory) == (key in keys), key
    for key in keys:
        assert (memory.read(key) == 1).all()
    with warnings.catch_warnings():  # no foreign file: no warning
        warnings.simplefilter("error")
        LongMemory(tmp_path / "other")


def test_directory_memory_long_keys(tmp_path: Path) -> None:
    memory = LongMemory(tmp_path)
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") - 40
    memory.init("k" * limit, torch.zeros(1, 2))  # the longest key fits, with its lock and journal files
    memory.write("k" * limit, [0], torch.ones(1, 2))
    assert memory.keys() == ["k" * limit] and "k" * limit in memory
    for key in ["k" * (limit + 1), "é" * (limit // 2 + 1), "/" * (limit // 3 + 1), "x" * 10_000]:
        assert key not in memory
        for call in (memory.init, memory.read, memory.shape):
            with pytest.raises(ValueError, match=f"key is too long.*at most {limit}"):
                call(key, torch.zeros(1, 2)) if call == memory.init else call(key)
    assert memory.keys() == ["k" * limit]


def _save_huge_header(path: Path) -> None:
    """A .npy file whose header claims shape (4, 10**12) float32, with 16 bytes of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (4, 10**12)})
        f.write(bytes(16))


MALFORMED_NPY = {
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "zero-d": (lambda p: np.save(p, np.float32(1.0)), "0-d array"),
    "truncated": (lambda p: (np.save(p, np.zeros((100, 10), np.float32)), os.truncate(p, 1000)), "truncated"),
    "truncated-header": (lambda p: (np.save(p, np.zeros((2, 2), np.float32)), os.truncate(p, 40)), "truncated"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "text": (lambda p: p.write_text("hello, world\n" * 5), "not a .npy array file"),
    "pickled": (lambda p: np.save(p, np.array([{}, None], dtype=object)), "Python objects"),
    "huge-header": (_save_huge_header, "truncated"),
    "float64": (lambda p: np.save(p, np.zeros((2, 3))), "float64 features"),
}


@pytest.mark.parametrize("case", MALFORMED_NPY)
def test_directory_memory_malformed_files_name_the_file(case: str, tmp_path: Path) -> None:
    make, what = MALFORMED_NPY[case]
    make(tmp_path / "bad.npy")
    memory = LongMemory(tmp_path)
    assert memory.keys() == ["bad"] and "bad" in memory  # listed, and found
    calls = {
        "shape": lambda: memory.shape("bad"),
        "read": lambda: memory.read("bad", [0]),
        "write": lambda: memory.write("bad", [0], torch.zeros(1, 3)),
        "encoder": lambda: SelectiveEncoder(make_encoder(), 0.5, memory=memory).train()(make_clips(), key="bad"),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=what) as info:
            call()
        assert str(tmp_path / "bad.npy") in str(info.value), name
    if case == "directory":
        with pytest.raises(ValueError, match="is a directory"):
            memory.init("bad", torch.zeros(2, 3))
    else:
        memory.init("bad", torch.ones(2, 3))  # init replaces a malformed file
        assert (memory.read("bad") == 1).all()


def test_directory_memory_storage_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"storage.*empty path.*'\.'"):
        LongMemory("")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="storage must be a directory"):
        LongMemory(tmp_path / "file")
    with pytest.raises(TypeError, match="durable"):
        LongMemory(tmp_path, durable=1)
    with pytest.raises(ValueError, match=r"durable.*directory"):
        LongMemory("ram", durable=True)


class _ReadDataset(torch.utils.data.Dataset):
    def __init__(self, memory: LongMemory, keys: list[str], repeats: int) -> None:
        self.memory, self.keys, self.repeats = memory, keys, repeats

    def __len__(self) -> int:
        return len(self.keys) * self.repeats

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.memory.read(self.keys[i % len(self.keys)])


def test_directory_memory_concurrent_readers_in_dataloader_workers(tmp_path: Path) -> None:
    """Two workers read while the main process rewrites: every read is one whole version of the array."""
    memory = LongMemory(tmp_path, torch.float16)
    keys = [f"v{i}" for i in range(4)]
    for key in keys:
        memory.init(key, torch.zeros(16, 32))
    loader = torch.utils.data.DataLoader(_ReadDataset(memory, keys, 10), batch_size=None, num_workers=2)
    versions = []
    for step, features in enumerate(loader):
        value = float(features[0, 0])
        assert (features == value).all(), "torn read"
        versions.append(value)
        memory.write(keys[step % 4], None, torch.full((16, 32), float(step + 1)))
    assert len(versions) == 40 and max(versions) > 0  # the workers saw the main process's writes


def test_ram_memory_in_dataloader_workers() -> None:
    memory = LongMemory("ram", torch.float16)
    expected = {f"v{i}": torch.randn(5, 3).half() for i in range(3)}
    for key, features in expected.items():
        memory.init(key, features)
    loader = torch.utils.data.DataLoader(_ReadDataset(memory, list(expected), 2), batch_size=None, num_workers=2)
    got = list(loader)
    for i, features in enumerate(got):
        assert torch.equal(features, expected[f"v{i % 3}"])


def test_memory_ownership_by_rank(tmp_path: Path) -> None:
    keys = [f"video_{i}" for i in range(40)]
    ranks = [LongMemory(tmp_path, rank=r, world_size=3) for r in range(3)]
    owners = [[m.owns(k) for m in ranks] for k in keys]
    assert all(sum(o) == 1 for o in owners)  # exactly one owner per video
    assert all(any(o[r] for o in owners) for r in range(3))  # every rank owns some
    for rank, memory in enumerate(ranks):
        for key in keys:
            assert memory.init(key, torch.full((2, 3), float(rank))) == memory.owns(key)
    for key, owner in zip(keys, owners, strict=True):
        assert (ranks[0].read(key) == owner.index(True)).all()  # written by its owner only
        for rank, memory in enumerate(ranks):
            assert memory.write(key, [0], torch.full((1, 3), -1.0)) == owner[rank]
        assert ranks[1].read(key)[0, 0] == -1.0 and ranks[2].read(key)[1, 0] == owner.index(True)
    assert LongMemory("ram", rank=1, world_size=3).init(keys[0], torch.zeros(2, 3))  # RAM: private, always written


def _distributed_rank(rank: int, root: str, store: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    memory = LongMemory(root)  # rank and world size from torch.distributed
    for i in range(8):
        memory.init(f"v{i}", torch.full((2,), float(rank)))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_memory_under_torch_distributed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    ranks = [
        context.Process(target=_distributed_rank, args=(r, str(tmp_path / "m"), str(tmp_path / "store")))
        for r in range(2)
    ]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(60)
    assert [p.exitcode for p in ranks] == [0, 0]
    memory = LongMemory(tmp_path / "m", rank=0, world_size=2)
    keys = [f"v{i}" for i in range(8)]
    assert memory.keys() == keys
    for key in keys:
        owner = 0 if memory.owns(key) else 1
        assert (memory.read(key) == owner).all()


# ----------------------------------------------------------------------------------------
# SelectiveEncoder with a LongMemory (TALLFormer)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("storage", "dtype"), [("ram", torch.float32), ("dir", torch.float16)])
def test_tallformer_mode(storage: str, dtype: torch.dtype, tmp_path: Path) -> None:
    encoder = make_encoder(dropout=0.0)
    memory = make_memory(storage, tmp_path, dtype)
    module = SelectiveEncoder(encoder, 0.3, "block", chunk_size=2, memory=memory, generator=seeded(0))
    clips, weight = make_clips(), upstream()
    sizes = batch_sizes(encoder)
    with torch.no_grad():
        plain = encoder(clips)
    sizes.clear()

    # Unknown key: initialised lazily by encoding the other clips without autograd.
    first = module(clips, key="v")
    torch.testing.assert_close(first, plain)
    torch.testing.assert_close(memory.read("v").float(), plain.to(dtype).float())
    assert sizes == [2, 1, 2, 2, 2, 1]  # 3 sampled clips in chunks of 2, then the 7 others

    # Known key: the others come from the memory, the sampled clips are encoded and written back.
    memory.init("v", torch.full((N, FEAT), 7.0))
    sizes.clear()
    index = sample_indices(N, 0.3, "block", seeded(0))  # the module's generator is at the same point again
    module.generator = seeded(0)
    out = module(clips, key="v")
    assert sizes == [2, 1]
    others = torch.ones(N, dtype=torch.bool)
    others[index] = False
    assert (out[others] == 7.0).all()
    torch.testing.assert_close(out[index], plain[index])
    torch.testing.assert_close(memory.read("v", index).float(), plain[index].to(dtype).float())
    assert (memory.read("v", others.nonzero().flatten()) == 7.0).all()

    (out * weight).sum().backward()
    got = param_grads(encoder)
    (encoder(clips[index]) * weight[index]).sum().backward()
    for g, e in zip(got, param_grads(encoder), strict=True):
        torch.testing.assert_close(g, e)

    # Eval: every clip encoded, the memory neither read nor written.
    sizes.clear()
    before = memory.read("v")
    torch.testing.assert_close(module.eval()(clips, key="v"), plain)
    assert sizes == [2, 2, 2, 2, 2] and torch.equal(memory.read("v"), before)


def test_tallformer_mode_checks_memory_shape() -> None:
    memory = LongMemory()
    module = SelectiveEncoder(make_encoder(), 0.5, memory=memory)
    memory.init("v", torch.zeros(N, FEAT + 1))
    with pytest.raises(ValueError, match="memory holds features of shape"):
        module(make_clips(), key="v")
    memory.init("w", torch.zeros(N + 1, FEAT))
    with pytest.raises(ValueError, match="memory holds features of shape"):
        module(make_clips(), key="w")
    with pytest.raises(TypeError, match="key"):
        module(make_clips())


def test_public_names() -> None:
    assert fastlocal.selective.selective_encode is selective_encode
    assert fastlocal.selective.LongMemory is LongMemory
    assert "selective" in fastlocal.__all__


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


class _WrongCount(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0] + 1, 3).requires_grad_()


class _ShapeByBatch(nn.Module):
    """Feature size depends on the batch size: inconsistent between chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x.new_ones(x.shape[0], x.shape[0])


class _NotATensor(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x,)


def _encode(**overrides: object) -> object:
    args = {"encoder": make_encoder(), "clips": make_clips(), "ratio": 0.5, **overrides}
    return selective_encode(args.pop("encoder"), args.pop("clips"), args.pop("ratio"), **args)


def _memory_with_key(tmp_path: Path | None = None) -> LongMemory:
    memory = LongMemory() if tmp_path is None else LongMemory(tmp_path)
    memory.init("v", torch.zeros(4, 3))
    return memory


V, T, K = ValueError, TypeError, KeyError
BAD = [
    ("ratio-zero", lambda: _encode(ratio=0.0), V, "ratio"),
    ("ratio-negative", lambda: _encode(ratio=-0.1), V, "ratio"),
    ("ratio-above-one", lambda: _encode(ratio=1.5), V, "ratio"),
    ("ratio-nan", lambda: _encode(ratio=math.nan), V, "ratio"),
    ("ratio-str", lambda: _encode(ratio="0.5"), T, "ratio"),
    ("clips-empty", lambda: _encode(clips=torch.zeros(0, *CLIP)), V, "clips"),
    ("clips-scalar", lambda: _encode(clips=torch.zeros(())), V, "clips"),
    ("clips-list", lambda: _encode(clips=[1.0]), T, "clips"),
    ("strategy-unknown", lambda: _encode(strategy="stride"), V, "strategy"),
    ("chunk-zero", lambda: _encode(chunk_size=0), V, "chunk_size"),
    ("chunk-float", lambda: _encode(chunk_size=2.0), T, "chunk_size"),
    ("generator-type", lambda: _encode(generator=0), T, "generator"),
    ("encoder-function", lambda: _encode(encoder=lambda x: x), T, "encoder"),
    ("encoder-wrong-count", lambda: _encode(encoder=_WrongCount()), V, "encoder"),
    ("encoder-shape-per-chunk", lambda: _encode(encoder=_ShapeByBatch(), ratio=0.3, chunk_size=2), V, "encoder"),
    ("encoder-not-tensor", lambda: _encode(encoder=_NotATensor()), T, "encoder"),
    ("sample-n-negative", lambda: sample_indices(-1, 0.5, "random"), V, "n"),
    ("sample-n-float", lambda: sample_indices(4.0, 0.5, "random"), T, "n"),
    ("sample-n-above-2**53", lambda: sample_indices(2**53 + 1, 1e-15, "random"), V, "n must be <= 2**53"),
    ("sample-k-huge", lambda: sample_indices(10**13, 0.5, "random"), V, "n * ratio"),
    ("sample-ratio", lambda: sample_indices(4, 0.0, "random"), V, "ratio"),
    ("sample-strategy", lambda: sample_indices(4, 0.5, "Random"), V, "strategy"),
    ("module-ratio", lambda: SelectiveEncoder(make_encoder(), 2.0), V, "ratio"),
    ("module-strategy", lambda: SelectiveEncoder(make_encoder(), 0.5, "blocks"), V, "strategy"),
    ("module-chunk", lambda: SelectiveEncoder(make_encoder(), 0.5, chunk_size=-1), V, "chunk_size"),
    ("module-memory", lambda: SelectiveEncoder(make_encoder(), 0.5, memory="ram"), T, "memory"),
    ("module-encoder", lambda: SelectiveEncoder(None, 0.5), T, "encoder"),
    ("memory-storage-type", lambda: LongMemory(3), T, "storage"),
    ("memory-dtype", lambda: LongMemory(dtype=torch.bfloat16), T, "dtype"),
    ("memory-rank-alone", lambda: LongMemory(rank=0), V, "world_size"),
    ("memory-rank-range", lambda: LongMemory(rank=2, world_size=2), V, "rank"),
    ("memory-key-type", lambda: _memory_with_key().read(3), T, "key"),
    ("memory-key-empty", lambda: _memory_with_key().init("", torch.zeros(1, 3)), V, "key"),
    ("memory-key-missing", lambda: _memory_with_key().read("w"), K, "key"),
    ("memory-init-empty", lambda: _memory_with_key().init("w", torch.zeros(0, 3)), V, "features"),
    ("memory-init-int", lambda: _memory_with_key().init("w", torch.zeros(2, 3, dtype=torch.long)), T, "features"),
    ("memory-feature-shape", lambda: _memory_with_key().write("v", [0], torch.zeros(1, 4)), V, "features"),
    ("memory-row-count", lambda: _memory_with_key().write("v", [0, 1], torch.zeros(1, 3)), V, "features"),
    ("memory-index-range", lambda: _memory_with_key().read("v", [4]), V, "index"),
    ("memory-index-negative", lambda: _memory_with_key().read("v", torch.tensor([-1])), V, "index"),
    ("memory-index-float", lambda: _memory_with_key().read("v", torch.tensor([0.0])), T, "index"),
    ("memory-index-2d", lambda: _memory_with_key().read("v", torch.zeros(1, 1, dtype=torch.long)), V, "index"),
    ("memory-index-type", lambda: _memory_with_key().read("v", "0"), T, "index"),
    ("memory-index-repeat", lambda: _memory_with_key().write("v", [1, 1], torch.zeros(2, 3)), V, "index"),
    ("memory-storage-empty", lambda: LongMemory(""), V, "storage"),
    ("memory-durable-type", lambda: LongMemory(durable="yes"), T, "durable"),
]
if not HAS_CUDA:
    BAD.append(("memory-cuda-missing", lambda: LongMemory("cuda"), V, "storage"))


@pytest.mark.parametrize(("call", "error", "names"), [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input(call: object, error: type[Exception], names: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert names in str(info.value)


def test_bad_input_directory_memory(tmp_path: Path) -> None:
    memory = _memory_with_key(tmp_path)
    with pytest.raises(ValueError, match="features"):
        memory.write("v", [0], torch.zeros(1, 4))
    with pytest.raises(KeyError, match="key"):
        memory.write("w", [0], torch.zeros(1, 3))
    assert memory.keys() == ["v"] and not any(p.suffix == ".tmp" for p in tmp_path.iterdir())
