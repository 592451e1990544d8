"""fastlocal.metrics.classification against brute-force oracles written with Python loops."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fastlocal.metrics import (
    ClassificationMetrics,
    average_views,
    confusion_matrix,
    topk_accuracy,
    topk_correct,
)


def _oracle_in_topk(row, label: int, k: int) -> bool:
    """Sort the classes by score, the true class after every class with the same score (ties against)."""
    order = sorted(range(len(row)), key=lambda c: (-row[c], c == label))
    return label in order[: min(k, len(row))]


def _oracle_softmax(row) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _oracle_video_means(scores, ids, from_logits=True) -> dict:
    sums, counts = {}, {}
    for row, v in zip(scores, ids, strict=True):
        p = _oracle_softmax(list(row)) if from_logits else [float(x) for x in row]
        sums[v] = [a + b for a, b in zip(sums.get(v, [0.0] * len(p)), p, strict=True)]
        counts[v] = counts.get(v, 0) + 1
    return {v: [s / counts[v] for s in sums[v]] for v in sums}


@pytest.mark.parametrize("classes", [1, 3, 5, 7])
def test_topk_against_oracle_with_ties(classes):
    rng = np.random.default_rng(classes)
    scores = rng.integers(0, 4, (300, classes)).astype(np.float32)  # a few values: ties everywhere
    labels = rng.integers(0, classes, 300)
    for k in (1, 2, 5, 10):
        expected = np.array([_oracle_in_topk(list(r), int(y), k) for r, y in zip(scores, labels, strict=True)])
        np.testing.assert_array_equal(topk_correct(scores, labels, k), expected)
    acc = topk_accuracy(scores, labels, topk=(1, 2, 5))
    for k in (1, 2, 5):
        oracle = 100.0 * np.mean([_oracle_in_topk(list(r), int(y), k) for r, y in zip(scores, labels, strict=True)])
        assert acc[k] == pytest.approx(oracle, abs=1e-12)


def test_ties_count_against_and_k_is_clamped():
    equal = np.zeros((4, 3))
    labels = np.array([0, 1, 2, 0])
    assert topk_accuracy(equal, labels, (1, 2, 3, 5)) == {1: 0.0, 2: 0.0, 3: 100.0, 5: 100.0}
    # top-5 over fewer than 5 classes is 100% (timm's accuracy clamps k, the released code calls it)
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    assert topk_accuracy(scores, [0, 0]) == {1: 50.0, 5: 100.0}
    # a tie for first place between the true class and another: not top-1, top-2
    assert topk_correct([[0.4, 0.4, 0.2]], [1], 1).tolist() == [False]
    assert topk_correct([[0.4, 0.4, 0.2]], [1], 2).tolist() == [True]
    # the result does not depend on the class order
    perm = np.array([2, 0, 1])
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 3, (50, 3)).astype(float), rng.integers(0, 3, 50)
    inverse = np.argsort(perm)
    assert topk_accuracy(s, y, (1, 2)) == topk_accuracy(s[:, perm], inverse[y], (1, 2))


def test_matches_torch_topk_without_ties():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 20, generator=generator)
    labels = torch.randint(0, 20, (500,), generator=generator)
    top5 = logits.topk(5, dim=1).indices
    for k in (1, 5):
        expected = (top5[:, :k] == labels[:, None]).any(dim=1).float().mean().item() * 100
        assert topk_accuracy(logits, labels, (k,))[k] == pytest.approx(expected)


def test_confusion_matrix_against_oracle():
    rng = np.random.default_rng(1)
    pred, labels = rng.integers(0, 6, 400), rng.integers(0, 6, 400)
    expected = np.zeros((6, 6), np.int64)
    for p, y in zip(pred, labels, strict=True):
        expected[y, p] += 1
    got = confusion_matrix(torch.from_numpy(pred), labels, 6)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64 and got.sum() == 400
    assert confusion_matrix([], np.zeros(0, np.int64), 2).tolist() == [[0, 0], [0, 0]]


def test_average_views_against_oracle():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (40, 5))
    ids = [f"v{i}" for i in rng.integers(0, 7, 40)]
    got_ids, means = average_views(logits, ids)
    oracle = _oracle_video_means(logits, ids)
    assert got_ids == list(dict.fromkeys(ids))  # order of first appearance
    np.testing.assert_allclose(means, [oracle[v] for v in got_ids], rtol=1e-12)
    _, plain = average_views(np.abs(logits), ids, from_logits=False)
    oracle = _oracle_video_means(np.abs(logits), ids, from_logits=False)
    np.testing.assert_allclose(plain, [oracle[v] for v in got_ids], rtol=1e-12)


def test_accumulator_against_oracle_split_batches():
    rng = np.random.default_rng(3)
    classes, videos, views = 6, 25, 30  # 3 crops x 10 clips per video, as released
    labels_of = rng.integers(0, classes, videos)
    ids = np.repeat(np.arange(videos), views)
    order = rng.permutation(ids.size)  # views of one video scattered over batches
    ids = ids[order]
    labels = labels_of[ids]
    logits = rng.normal(0, 1, (ids.size, classes)) + 1.5 * np.eye(classes)[labels]
    logits = np.round(logits, 1)  # ties between clip scores too
    metrics = ClassificationMetrics(classes, topk=(1, 5))
    for start in range(0, ids.size, 64):
        part = slice(start, start + 64)
        metrics.update(torch.from_numpy(logits[part]), torch.from_numpy(labels[part]),
                       [f"video{v}" for v in ids[part]])
    out = metrics.compute()
    assert out["clips"] == ids.size and out["videos"] == videos
    for k in (1, 5):
        clip = 100.0 * np.mean([_oracle_in_topk(list(r), int(y), k) for r, y in zip(logits, labels, strict=True)])
        assert out[f"clip_top{k}"] == pytest.approx(clip, abs=1e-9)
    means = _oracle_video_means(logits, [f"video{v}" for v in ids])
    for k in (1, 5):
        video = 100.0 * np.mean([_oracle_in_topk(means[f"video{v}"], int(labels_of[v]), k) for v in range(videos)])
        assert out[f"video_top{k}"] == pytest.approx(video, abs=1e-9)
    assert out["video_top1"] > out["clip_top1"]  # averaging views helps on this data
    # confusion matrices: clip level from each view's arg-max, video level from the averaged softmax
    clip_conf = np.zeros((classes, classes), np.int64)
    for r, y in zip(logits, labels, strict=True):
        clip_conf[y, int(np.argmax(r))] += 1
    np.testing.assert_array_equal(metrics.confusion("clip"), clip_conf)
    video_conf = np.zeros((classes, classes), np.int64)
    for v in range(videos):
        video_conf[labels_of[v], int(np.argmax(means[f"video{v}"]))] += 1
    np.testing.assert_array_equal(metrics.confusion(), video_conf)
    results = metrics.video_results()
    json.dumps(results)
    first = results[[r["video"] for r in results].index("video3")]
    oracle_top = sorted(range(classes), key=lambda c: -means["video3"][c])[:5]
    assert first["label"] == labels_of[3] and first["views"] == views and first["top"] == oracle_top
    assert first["pred"] == oracle_top[0]
    np.testing.assert_allclose(first["scores"], [means["video3"][c] for c in oracle_top], rtol=1e-12)


def test_released_evaluation_one_video():
    # gluonmm's test loop: softmax per view, mean over the 30 views, then top-1 / top-5
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(30, 400, generator=generator)
    label = int(torch.softmax(logits, dim=1).mean(0).topk(5).indices[3])
    metrics = ClassificationMetrics(400)
    metrics.update(logits, torch.full((30,), label), ["a"] * 30)
    out = metrics.compute()
    assert out["video_top1"] == 0.0 and out["video_top5"] == 100.0 and out["videos"] == 1


def test_without_video_ids_and_probabilities():
    metrics = ClassificationMetrics(3, topk=(1, 2), from_logits=False)
    metrics.update(np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]), [2, 0])
    assert metrics.compute() == {"clip_top1": 50.0, "clip_top2": 100.0, "clips": 2}
    assert metrics.videos == 0
    with pytest.raises(ValueError, match="no video ids were given"):
        metrics.confusion("video")
    np.testing.assert_array_equal(metrics.confusion("clip"), [[1, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_errors():
    with pytest.raises(ValueError, match="holds NaN"):
        topk_accuracy([[0.1, float("nan")]], [0])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        topk_accuracy(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="2 integer class indices"):
        topk_accuracy(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"real \[N, C\] array"):
        topk_accuracy(np.zeros(3), [0])
    with pytest.raises(ValueError, match="at least one row"):
        topk_accuracy(np.zeros((0, 3)), np.zeros(0, np.int64))
    for bad in (0, True, (1, 0), ()):
        with pytest.raises(ValueError, match="topk must be ints >= 1"):
            topk_accuracy(np.zeros((1, 3)), [0], bad)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(ValueError, match=r"pred must be in \[0, 2\)"):
        confusion_matrix([2], [0], 2)
    with pytest.raises(ValueError, match=r"pred must be a 1-D array"):
        confusion_matrix([[0]], [0], 2)
    with pytest.raises(ValueError, match="labels must be 2 integer class indices"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="one id per row"):
        average_views(np.zeros((2, 3)), ["a"])
    metrics = ClassificationMetrics(3)
    with pytest.raises(ValueError, match="no views were added"):
        metrics.compute()
    with pytest.raises(ValueError, match="num_classes=3 columns, got 4"):
        metrics.update(np.zeros((1, 4)), [0], ["a"])
    with pytest.raises(ValueError, match=r"video 'a' have different labels \[0, 1\]"):
        metrics.update(np.zeros((2, 3)), [0, 1], ["a", "a"])
    metrics = ClassificationMetrics(3)
    metrics.update(np.zeros((1, 3)), [2], ["a"])
    with pytest.raises(ValueError, match=r"video 'a' have different labels \[1, 2\]"):
        metrics.update(np.zeros((2, 3)), [0, 1], ["new", "a"])
    assert metrics.videos == 1 and metrics.compute()["clips"] == 1  # a refused batch leaves no trace
    with pytest.raises(ValueError, match="video_ids must be given in every update"):
        metrics.update(np.zeros((1, 3)), [1])
    with pytest.raises(ValueError, match="level must be 'video' or 'clip'"):
        metrics.confusion("frame")
    plain = ClassificationMetrics(3)
    plain.update(np.zeros((1, 3)), [1])
    with pytest.raises(ValueError, match="give them in all or none"):
        plain.update(np.zeros((1, 3)), [1], ["b"])
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        ClassificationMetrics(0)


def test_compute_returns_plain_python_numbers():
    """JSON and torch.load(weights_only=True) checkpoints take them; NumPy scalars they refuse."""
    metrics = ClassificationMetrics(num_classes=3, topk=(1, 2))
    metrics.update(np.eye(3)[[0, 1, 2, 0]], [0, 0, 1, 1], video_ids=["a", "a", "b", "b"])
    scores = metrics.compute()
    assert all(type(v) in (int, float) for v in scores.values()), {k: type(v) for k, v in scores.items()}
