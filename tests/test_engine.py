"""fastlocal.models.engine, registry and CLI: batches, schedules, checkpoints and resume,
DDP under torchrun (gloo) against one process, gradient accumulation, autocast, info."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastlocal.models import create, engine, get_preset, list_models
from fastlocal.models.cli import main as models_cli
from fastlocal.models.cli import multiply_adds
from fastlocal.models.configs import parse_assignment, to_dict
from fastlocal.models.tut import PRESETS, TUTTask, TUTTrainConfig

import fastlocal
from fastlocal.data import MSTCNDataset
from fastlocal.data.synthetic import SyntheticSpec, generate
from fastlocal.flop_formulas import window_pairs

ROOT = Path(__file__).resolve().parents[1]


def train_config(**changes) -> TUTTrainConfig:
    return TUTTrainConfig(**{**to_dict(PRESETS["small"].train), "eval_every": 0, **changes})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Eight training videos of one length (so per-rank means of frame losses equal the global one)."""
    return generate(tmp_path_factory.mktemp("syn") / "data",
                    SyntheticSpec(videos=10, min_length=64, max_length=64, classes=8, dim=8, splits=5, seed=1))


def tut_task(data: Path, **model) -> TUTTask:
    config = PRESETS["small"].model.replace(input_dim=8, num_classes=8, **model)
    return TUTTask(config, MSTCNDataset(data, 1, "train"), MSTCNDataset(data, 1, "test"))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


# ---- batches -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch", "accum", "world"), [(10, 4, 1, 2), (10, 4, 2, 2), (7, 3, 2, 2), (5, 8, 1, 4),
                                                            (1, 1, 1, 3), (9, 9, 3, 1)])
def test_step_plan_splits_every_batch_once_with_weights_summing_to_world_size(n, batch, accum, world):
    config = train_config(batch_size=batch, grad_accum=accum, seed=3)
    plans = [engine.step_plan(n, 2, config, world, rank) for rank in range(world)]
    assert len({len(p) for p in plans}) == 1 and len({tuple(len(s) for s in p) for p in plans}) == 1
    order = engine.step_plan(n, 2, train_config(batch_size=n, seed=3))[0][0][0]
    assert sorted(order) == list(range(n))  # the epoch's permutation
    seen = []
    for s in range(len(plans[0])):
        step = [(idx, w) for p in plans for idx, w in p[s]]
        real = [i for idx, w in step if w > 0 for i in idx]
        seen += real
        # DDP averages over ranks: the weights of one step sum to world_size
        assert sum(w for _, w in step) == pytest.approx(world)
        assert all(w == pytest.approx(len(idx) * world / len(real)) for idx, w in step if w > 0)
    assert sorted(seen) == list(range(n))
    assert engine.step_plan(n, 3, config, world, 0) != engine.step_plan(n, 2, config, world, 0) or n == 1


def test_step_plan_rejects_an_empty_training_set():
    with pytest.raises(ValueError, match="training set is empty"):
        engine.step_plan(0, 0, train_config())


# ---- configs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("batch_size", -1), ("grad_accum", 1.5),
                                              ("optimizer", "lamb"), ("scheduler", "poly"), ("amp", "fp8"),
                                              ("lr", 0.0), ("betas", (0.9,)), ("clip_grad_norm", 0.0),
                                              ("backend", "gpu"), ("sample_rate", 0)])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        train_config(**{field: value})


def test_parse_assignment_types():
    config = train_config()
    assert parse_assignment(config, "lr=0.01") == ("lr", 0.01)
    assert parse_assignment(config, "betas=0.8,0.9") == ("betas", (0.8, 0.9))
    assert parse_assignment(config, "clip_grad_norm=none") == ("clip_grad_norm", None)
    assert parse_assignment(config, "amp=bf16") == ("amp", "bf16")
    assert parse_assignment(PRESETS["small"].model, "decoder_rpb=true") == ("decoder_rpb", True)
    for bad, match in (("lr", "FIELD=VALUE"), ("nope=1", "unknown"), ("amp=fp8", "one of"), ("epochs=x", "int")):
        with pytest.raises(ValueError, match=match):
            parse_assignment(config, bad)


@pytest.mark.parametrize("kind", ["cosine", "step"])
def test_lr_schedules_warm_up_then_decay(kind):
    config = train_config(scheduler=kind, lr=1.0, epochs=10, warmup_epochs=2, milestones=(5, 8), gamma=0.5,
                          min_lr=0.1)
    factor = engine._lr_factor(config, steps_per_epoch=4)
    warm = [factor(s) for s in range(8)]
    assert warm == sorted(warm) and warm[-1] == pytest.approx(1.0)
    if kind == "step":
        assert factor(4 * 5) == 0.5 and factor(4 * 8) == 0.25 and factor(4 * 5 - 1) == 1.0
    else:
        assert factor(8) == pytest.approx(1.0) and factor(40) == pytest.approx(0.1)
        tail = [factor(s) for s in range(8, 41)]
        assert tail == sorted(tail, reverse=True)


def test_param_groups_scale_the_lr_per_group_and_skip_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[2].requires_grad_(False)
    groups = [{"params": model[0].parameters(), "lr_scale": 1e-3},
              {"params": [*model[1].parameters(), *model[2].parameters()], "weight_decay": 0.5}]
    optimizer = engine._optimizer(model, train_config(optimizer="adamw", lr=0.1, weight_decay=0.01), groups)
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(1e-4) and backbone["weight_decay"] == 0.01
    assert head["lr"] == 0.1 and head["weight_decay"] == 0.5
    assert [p.shape for p in head["params"]] == [(2, 2), (2,)]  # the frozen layer is left out
    every = engine._optimizer(model, train_config(), None).param_groups
    assert len(every) == 1 and len(every[0]["params"]) == 4


def test_fp16_on_cpu_is_a_clear_error(data):
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        engine.fit(tut_task(data), train_config(amp="fp16"), progress=False, log=None)


# ---- training: accumulation, autocast, resume --------------------------------------------------------------


def no_dropout(data: Path) -> TUTTask:
    return tut_task(data, input_dropout=0.0, ffn_dropout=0.0, attention_dropout=0.0, beta=0.0)


def test_gradient_accumulation_takes_the_same_steps(data):
    """batch 4 in one piece == batch 4 as 2 micro-batches of 2 (losses are means over samples). SGD: Adam
    turns the rounding noise of the key projection's bias gradient (exactly zero in exact arithmetic:
    softmax ignores a shift of a row) into steps of +-lr, so only SGD can compare to 1e-6."""
    sgd = {"batch_size": 4, "epochs": 1, "optimizer": "sgd", "lr": 0.1}
    a, _ = engine.fit(no_dropout(data), train_config(**sgd), progress=False, log=None)
    b, _ = engine.fit(no_dropout(data), train_config(**sgd, grad_accum=2), progress=False, log=None)
    assert_same_weights(weights(a), weights(b), atol=1e-6)


def test_bf16_autocast_on_cpu_trains(data):
    model, history = engine.fit(tut_task(data), train_config(amp="bf16", batch_size=2, epochs=2, eval_every=1),
                                progress=False, log=None)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "eval_F1@50" in history[-1] and history[-1]["loss"] == history[-1]["loss"]


class Crash(Exception):
    pass


class CrashingTask(TUTTask):
    """Raises at the ``crash_at``-th loss call: a process killed mid-epoch (nothing written after the
    last checkpoint)."""

    def __init__(self, *args, crash_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls, self.crash_at = 0, crash_at

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash
        return super().loss(model, batch)


@pytest.mark.parametrize("checkpoint_every", [0, 1])
def test_run_killed_mid_epoch_and_resumed_ends_identical(data, tmp_path, checkpoint_every):
    """Dropout on, clipping and a decaying lr: the resumed run's weights, optimizer state and history equal
    an uninterrupted run's exactly (epoch-end checkpoints redo the epoch; step checkpoints resume within it)."""
    config = train_config(batch_size=2, epochs=3, checkpoint_every=checkpoint_every, clip_grad_norm=1.0,
                          scheduler="cosine", warmup_epochs=0.5, eval_every=2)
    base = tut_task(data)
    whole, whole_history = engine.fit(base, config, tmp_path / "whole", progress=False, log=None)

    run = tmp_path / "killed"
    crashing = CrashingTask(base.config, base.train_set(), base.eval_set(), crash_at=7)  # 4 steps per epoch
    with pytest.raises(Crash):
        engine.fit(crashing, config, run, progress=False, log=None)
    state = engine.load_checkpoint(run / engine.CHECKPOINT)
    assert (state["epoch"], state["step"]) == ((1, 2) if checkpoint_every else (1, 0))
    logs = []
    resumed, history = engine.fit(base, config, run, progress=False, log=logs.append)
    assert any("resumed from" in line for line in logs)
    assert_same_weights(weights(whole), weights(resumed))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole_history]
    a = engine.load_checkpoint(tmp_path / "whole" / engine.CHECKPOINT)["optimizer"]["state"]
    b = engine.load_checkpoint(run / engine.CHECKPOINT)["optimizer"]["state"]
    for key in a:
        assert torch.equal(a[key]["exp_avg_sq"], b[key]["exp_avg_sq"])
    lines = (run / engine.METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_checkpoint_is_atomic_and_refuses_foreign_files(tmp_path):
    path = tmp_path / "last.pt"
    engine.save_checkpoint(path, {"format": "fastlocal.models.engine/1", "x": torch.ones(2)})
    assert not (tmp_path / "last.pt.tmp").exists()
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        engine.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"torn\.pt"):
        engine.load_checkpoint(tmp_path / "torn.pt")


# ---- distributed -------------------------------------------------------------------------------------------


def cli_train(data: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    """Two SGD steps of batch 4 (8 training videos), without dropout or the boundary term (whose mean
    over boundary rows is not a mean over videos), through the command line, under torchrun when
    nproc > 1 (SGD: see test_gradient_accumulation_takes_the_same_steps)."""
    args = ["-m", "fastlocal.models", "tut", "train", "--preset", "small", "--data", str(data), "--split", "1",
            "--out", str(out), "--epochs", "1", "--batch-size", "4", "--eval-every", "0", "--no-progress",
            "--set", "input_dropout=0", "--set", "ffn_dropout=0", "--set", "attention_dropout=0", "--set", "beta=0",
            "--set", "optimizer=sgd", "--lr", "0.1"]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
                          check=False)


def test_torchrun_two_gloo_processes_match_one_process(data, tmp_path):
    one = cli_train(data, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr
    two = cli_train(data, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr
    a = engine.load_checkpoint(tmp_path / "one" / engine.CHECKPOINT)
    b = engine.load_checkpoint(tmp_path / "two" / engine.CHECKPOINT)
    assert (a["world_size"], b["world_size"], b["epoch"], len(b["rng"])) == (1, 2, 1, 2)
    assert_same_weights(a["model"], b["model"], atol=1e-6)
    # the logged epoch means are reduced over both processes
    assert b["history"][0]["loss"] == pytest.approx(a["history"][0]["loss"], rel=1e-5)
    assert two.stdout.count("epoch=1") == 1  # rank 0 alone logs


# ---- registry and CLI -------------------------------------------------------------------------------------


def test_registry_create_and_list():
    assert "salads50" in list_models()["tut"]
    model = create("tut", preset="gtea", input_dim=64)
    assert model.config.input_dim == 64 and model.config.window == 11
    assert get_preset("tut").name == "salads50"
    with pytest.raises(ValueError, match="unknown model 'vidtr2'"):
        create("vidtr2")
    with pytest.raises(ValueError, match="training hyper-parameters"):
        create("tut", lr=0.1)
    with pytest.raises(ValueError, match="unknown TUTConfig field"):
        create("tut", widht=3)


def test_info_prints_config_parameters_and_multiply_adds(capsys):
    assert models_cli(["tut", "info", "--preset", "small", "--set", "window=5"]) == 0
    out = capsys.readouterr().out
    model = create("tut", preset="small", window=5)
    params = sum(p.numel() for p in model.parameters())
    assert f"parameters: {params:,}" in out and "window = 5" in out and "fastlocal.local_attention" in out
    assert "multiply-adds of one sample (one video of 5,800 feature frames)" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert models_cli(["nosuchmodel", "info"]) == 2
    assert "unknown model 'nosuchmodel'" in capsys.readouterr().err
    assert models_cli(["tut", "info", "--set", "windw=3"]) == 2
    assert "unknown field 'windw' (neither TUTConfig nor TUTTrainConfig" in capsys.readouterr().err
    assert models_cli(["list"]) == 0
    assert "tut" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "message"), [
    (["--backend", "bogus"], "TUTTrainConfig.backend must be one of"),
    (["--sample-rate", "0"], "TUTTrainConfig.sample_rate must be an int >= 1"),
    (["--background", "nosuchclass"], "background classes ['nosuchclass'] are not in the dataset's classes"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    (["--device", "nonsense"], "--device 'nonsense' is not a device"),
    (["--set", "lr=-1"], "TUTTrainConfig.lr must be"),
    (["--set", "optimizer=lamb"], "expected one of"),
])
def test_cli_user_errors_are_one_line_exit_2(data, tmp_path, capsys, extra, message):
    argv = ["tut", "train", "--preset", "small", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--no-progress", *extra]
    assert models_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_refuses_bad_output_and_weights_files(data, tmp_path, capsys):
    common = ["--preset", "small", "--data", str(data), "--no-progress"]
    (tmp_path / "file").write_text("not a directory")
    assert models_cli(["tut", "train", *common, "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    (tmp_path / "corrupt.pt").write_bytes(b"garbage, not a torch file")
    weights = ["--weights", str(tmp_path / "corrupt.pt")]
    assert models_cli(["tut", "eval", *common, "--out", str(tmp_path / "r"), *weights]) == 2
    assert "cannot read weights from" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert models_cli(["tut", "train", *common, "--epochs", "1", "--out", str(locked / "run")]) == 2
        assert "Permission denied" in capsys.readouterr().err


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_runs_no_code(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": "fastlocal.models.engine/1", "model": _Payload(marker)}, run / engine.CHECKPOINT)
    common = ["--preset", "small", "--data", str(data), "--out", str(run), "--no-progress"]
    assert models_cli(["tut", "eval", *common]) == 2
    assert models_cli(["tut", "train", *common, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and "WeightsUnpickler" in err
    assert not marker.exists()


@pytest.mark.parametrize(("T", "left", "right", "shift"), [(1, 0, 0, False), (7, 2, 2, False), (7, 9, 9, False),
                                                          (10, 3, 0, False), (10, 0, 4, False), (10, 2, 2, True),
                                                          (3, 2, 2, True)])
def test_window_pairs_counts_the_band(T, left, right, shift):
    if shift:
        want = T * min(left + right + 1, T)
    else:
        want = sum(1 for i in range(T) for j in range(T) if -left <= j - i <= right)
    assert window_pairs(T, left, right, shift) == want


def test_flop_counter_counts_local_attention():
    q = torch.randn(2, 3, 40, 8)
    v = torch.randn(2, 3, 40, 4)
    macs, per_op = multiply_adds(lambda *a: fastlocal.local_attention(*a, 7), (q, q, v))
    assert macs == per_op["fastlocal.local_attention"] == 2 * 3 * window_pairs(40, 3, 3, False) * (8 + 4)
