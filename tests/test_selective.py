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
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastlocal
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


def _crash_during(operation: str, root: str) -> None:
    """Child process: die (no cleanup) at the fsync just before the atomic rename."""
    os.fsync = lambda fd: os._exit(17)
    memory = LongMemory(root)
    if operation == "write":
        memory.write("a", [0, 2], torch.full((2, 4), 9.0))
    else:
        memory.init("b", torch.full((3, 4), 9.0))


@pytest.mark.parametrize("operation", ["write", "init"])
def test_directory_memory_after_crash_mid_write(operation: str, tmp_path: Path) -> None:
    old = torch.arange(12.0).reshape(3, 4)
    LongMemory(tmp_path).init("a", old)
    child = multiprocessing.get_context("fork").Process(target=_crash_during, args=(operation, str(tmp_path)))
    child.start()
    child.join(30)
    assert child.exitcode == 17
    assert any(p.suffix == ".tmp" for p in tmp_path.iterdir())  # the crashed writer's half-done file

    memory = LongMemory(tmp_path)
    assert memory.keys() == ["a"]  # a crashed init leaves no key, the leftover temp file is not a key
    torch.testing.assert_close(memory.read("a"), old, rtol=0, atol=0)  # the old array, whole
    assert memory.write("a", [1], torch.zeros(1, 4))
    assert (memory.read("a", [1]) == 0).all() and torch.equal(memory.read("a", [0, 2]), old[[0, 2]])


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
