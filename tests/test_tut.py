"""TUT (fastlocal.models.TUT): shapes and lengths, padded batches, released-weight conversion,
losses, gradient flow, a training check on synthetic data and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastlocal.models import TUT, TUTConfig, create, engine
from fastlocal.models.cli import main as models_cli
from fastlocal.models.configs import from_dict, to_dict
from fastlocal.models.tut import PRESETS, TUTTask, boundary_targets, compute_loss, tut_loss
from fastlocal.models.tut.losses import boundary_kl, boundary_prior, boundary_rows, smoothing_loss
from fastlocal.models.tut.model import convert_released_state_dict, nearest_index

from fastlocal.data import MSTCNDataset
from fastlocal.data.synthetic import SyntheticSpec, generate
from fastlocal.metrics import segmentation_scores
from fastlocal.nn import RelativePositionBias


def tiny(**overrides) -> TUTConfig:
    base = {"input_dim": 12, "num_classes": 5, "num_refinement": 2, "num_layers": 3, "window": 5, "d_model_pg": 16,
            "d_ffn_pg": 24, "d_model_r": 8, "d_ffn_r": 12, "heads": 2}
    return PRESETS["small"].model.replace(**{**base, **overrides})


def cli(argv: list[str]) -> int:
    return models_cli(argv, model="tut")


def segment_labels(T: int, seed: int, C: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cuts = torch.sort(torch.randperm(T - 1, generator=g)[: max(T // 12, 1)] + 1).values.tolist()
    y = torch.zeros(T, dtype=torch.long)
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, T], strict=True)):
        y[a:b] = (i * 3 + seed) % C
    return y


# ---- config --------------------------------------------------------------------------------------


def test_presets_are_table_10():
    s, g, b = (PRESETS[name].model for name in ("salads50", "gtea", "breakfast"))
    st, bt = PRESETS["salads50"].train, PRESETS["breakfast"].train
    assert (s.num_refinement, s.num_layers, s.window, s.d_model_pg, s.d_ffn_pg, s.d_model_r, s.d_ffn_r, s.heads) == \
        (3, 5, 51, 128, 128, 64, 64, 4)
    assert (g.num_layers, g.window, g.d_model_pg, g.d_model_r, g.heads, g.input_dropout, g.beta) == \
        (4, 11, 64, 64, 4, 0.5, 0.1)
    assert (b.num_layers, b.window, b.d_model_pg, b.d_model_r, b.heads, bt.lr, bt.weight_decay, b.beta) == \
        (5, 25, 192, 96, 6, 2e-4, 5e-5, 0.005)
    assert (s.input_dropout, s.ffn_dropout, s.attention_dropout, st.lr, st.weight_decay, s.beta, st.sample_rate) == \
        (0.4, 0.3, 0.2, 5e-4, 1e-5, 0.02, 2)
    # the released code's optimizer: Adam with beta2 = 0.98, lr halved after 3 epochs without a lower loss
    assert (st.optimizer, st.betas, st.scheduler, st.plateau_factor, st.plateau_patience) == \
        ("adam", (0.9, 0.98), "plateau", 0.5, 3)
    # released-code defaults of the paper/code switches
    assert (s.decoder_kv, s.decoder_rpb, s.attention_dropout_on, s.boundary_layers, s.rpb) == \
        ("released", False, "output", "encoder", "shared")
    assert create("tut", preset="salads50").config == s
    assert from_dict(TUTConfig, to_dict(s)) == s


@pytest.mark.parametrize(("field", "value"), [("window", 4), ("heads", 3), ("rpb", "all"), ("decoder_kv", "x"),
                                              ("input_dropout", 1.0), ("num_refinement", -1), ("num_layers", 0)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value})
    with pytest.raises(ValueError, match="unknown preset 'kinetics' for model 'tut'"):
        create("tut", preset="kinetics")


def test_rpb_modes_share_tables_across_stages():
    shared = TUT(tiny(rpb="shared"))
    for i in range(3):
        tables = {id(stage.encoder[i].attn.rpb) for stage in shared.stages}
        assert tables == {id(shared.encoder_rpb[i])}
        assert all(stage.decoder[i].attn.rpb is None for stage in shared.stages)
    per_stage = TUT(tiny(rpb="per_stage"))
    assert len({id(stage.encoder[0].attn.rpb) for stage in per_stage.stages}) == 3
    none = TUT(tiny(rpb="none"))
    assert all(layer.attn.rpb is None for stage in none.stages for layer in [*stage.encoder, *stage.decoder])
    dec = TUT(tiny(decoder_rpb=True))
    assert {id(stage.decoder[1].attn.rpb) for stage in dec.stages} == {id(dec.decoder_rpb[1])}
    n_shared = sum(p.numel() for p in shared.parameters())
    n_per_stage = sum(p.numel() for p in per_stage.parameters())
    assert n_per_stage - n_shared == 2 * 3 * 2 * 5  # two more stages x 3 layers x [heads, window]


# ---- lengths and padding ---------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 3, 4, 7, 8, 13, 37, 64])
def test_any_length(T):
    torch.manual_seed(0)
    model = TUT(tiny()).eval()
    x = torch.randn(1, T, 12)
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (3, 1, T, 5)
    assert torch.isfinite(out.logits).all()


def test_nearest_index_is_interpolate():
    for src, dst in [(37, 18), (18, 37), (9, 4), (4, 9), (5, 2), (1000, 500), (7, 7), (3, 1), (1, 3)]:
        ramp = torch.arange(src, dtype=torch.float32).view(1, 1, src)
        want = F.interpolate(ramp, size=dst, mode="nearest").view(-1).long()
        assert torch.equal(nearest_index(src, dst), want)


@pytest.mark.parametrize("config", [tiny(), tiny(decoder_kv="paper", decoder_rpb=True, rpb="per_stage")])
def test_padded_batch_equals_videos_alone(config):
    # float64: instance norm over 1-3 frames amplifies float32 rounding; the maths is exact
    torch.manual_seed(1)
    model = TUT(config).eval().double()
    lengths = [41, 17, 3, 30]
    T = max(lengths)
    x = torch.randn(len(lengths), T, 12, dtype=torch.float64)
    for i, n in enumerate(lengths):
        x[i, n:] = 1e3  # padding content must not matter
    with torch.no_grad():
        batch = model(x, torch.tensor(lengths)).logits
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n]).logits
            torch.testing.assert_close(batch[:, i, :n], alone[:, 0], atol=1e-10, rtol=1e-10)
            assert (batch[:, i, n:] == 0).all()


def test_bad_inputs():
    model = TUT(tiny())
    with pytest.raises(ValueError, match=r"x must be \[B, T, 12\]"):
        model(torch.randn(1, 10, 11))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 10, 12), torch.tensor([10, 11]))


# ---- weights -----------------------------------------------------------------------------------------


def released_state_dict(config: TUTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the released code's names and shapes (Conv1d kernels, RPE [w, h])."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    sd = {}
    rpe = [rand(config.window, config.heads) for _ in range(config.num_layers)]
    for i, w in enumerate(rpe):
        sd[f"rpe_modules.{i}.embeddings.weight"] = w
    for s in range(config.num_stages):
        prefix = "PG" if s == 0 else f"Rs.{s - 1}"
        d = config.d_model_pg if s == 0 else config.d_model_r
        f = config.d_ffn_pg if s == 0 else config.d_ffn_r
        d_in = config.input_dim if s == 0 else config.num_classes
        sd[f"{prefix}.conv_1x1_in.weight"], sd[f"{prefix}.conv_1x1_in.bias"] = rand(d, d_in, 1), rand(d)
        for kind in ("encoder_layers", "decoder_layers"):
            for i in range(config.num_layers):
                p = f"{prefix}.{kind}.{i}"
                for name in ("W_q", "W_k", "W_v", "W_out"):
                    sd[f"{p}.attention.{name}.weight"], sd[f"{p}.attention.{name}.bias"] = rand(d, d, 1), rand(d)
                sd[f"{p}.conv1.weight"], sd[f"{p}.conv1.bias"] = rand(f, d, 1), rand(f)
                sd[f"{p}.conv2.weight"], sd[f"{p}.conv2.bias"] = rand(d, f, 1), rand(d)
                if kind == "encoder_layers":
                    sd[f"{p}.attention.rpe.embeddings.weight"] = rpe[i]
        sd[f"{prefix}.conv_out_layer.weight"] = rand(config.num_classes, d, 1)
        sd[f"{prefix}.conv_out_layer.bias"] = rand(config.num_classes)
    return sd


def released_forward(sd: dict[str, torch.Tensor], config: TUTConfig, x: torch.Tensor) -> torch.Tensor:
    """The released model's eval-mode maths for one video, written densely from reading the code:
    [B, C, L] layout, F.interpolate resampling, bias W[(i - j) + w//2, h], decoder q = k = decoder
    stream and v = encoder output, post-norm instance norm. x: [1, D, T] -> [S, 1, C, T]."""
    w, H = config.window, config.heads

    def conv(t, name):
        return F.conv1d(t, sd[name + ".weight"], sd[name + ".bias"])

    def attention(p, q_in, k_in, v_in, rpe):
        q, k, v = conv(q_in, p + ".W_q"), conv(k_in, p + ".W_k"), conv(v_in, p + ".W_v")
        B, E, L = q.shape
        q, k, v = (t.reshape(B, H, E // H, L) for t in (q, k, v))
        scores = torch.einsum("bhdl,bhdn->bhln", q, k) / math.sqrt(E // H)
        rel = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # i - j
        if rpe is not None:
            scores = scores + rpe[rel.clamp(-(w // 2), w // 2) + w // 2].permute(2, 0, 1)[None]
        scores = scores.masked_fill(rel.abs() > w // 2, float("-inf"))
        out = torch.einsum("bhdn,bhln->bhdl", v, scores.softmax(-1)).reshape(B, E, L)
        return conv(out, p + ".W_out")

    def layer(p, x, kv_key, value, rpe):
        x = F.instance_norm(x + attention(p + ".attention", x, kv_key, value, rpe))
        return F.instance_norm(x + conv(F.relu(conv(x, p + ".conv1")), p + ".conv2"))

    def stage(prefix, x):
        N = config.num_layers
        x = conv(x, prefix + ".conv_1x1_in")
        sizes = [x.shape[-1] // 2**i for i in range(N + 1)]
        skips = [x]
        for i in range(N):
            x = F.interpolate(x, size=sizes[i + 1], mode="nearest")
            x = layer(f"{prefix}.encoder_layers.{i}", x, x, x, sd[f"rpe_modules.{i}.embeddings.weight"])
            skips.append(x)
        for i in range(N):
            x = F.interpolate(x, size=sizes[N - i - 1], mode="nearest")
            x = layer(f"{prefix}.decoder_layers.{i}", x, x, skips[N - i - 1], None)
        return conv(x, prefix + ".conv_out_layer")

    outs = [stage("PG", x)]
    for k in range(config.num_refinement):
        outs.append(stage(f"Rs.{k}", outs[-1].softmax(1)))
    return torch.stack(outs)


@pytest.mark.parametrize("T", [37, 64])
def test_released_weights_give_the_released_outputs(tmp_path, T):
    config = tiny()
    sd = released_state_dict(config)
    torch.save(sd, tmp_path / "epoch-100.model")
    model = TUT(config)
    model.load_weights(tmp_path / "epoch-100.model")
    model.eval()
    x = torch.randn(1, T, config.input_dim)
    with torch.no_grad():
        ours = model(x).logits.permute(0, 1, 3, 2)
        want = released_forward(sd, config, x.transpose(1, 2))
    torch.testing.assert_close(ours, want, atol=1e-4, rtol=1e-4)


def test_released_rpb_layout_is_flipped():
    w = torch.arange(10.0).view(5, 2)  # released [window, heads], index (i - j) + w//2
    converted = convert_released_state_dict({"rpe_modules.0.embeddings.weight": w})["encoder_rpb.0.table"]
    assert converted.shape == (2, 5)
    for h in range(2):
        for offset in range(-2, 3):  # offset = j - i
            assert converted[h, offset + 2] == w[-offset + 2, h]
    with pytest.raises(ValueError, match="unexpected key"):
        convert_released_state_dict({"PG.something.weight": torch.zeros(1)})


def test_own_checkpoint_roundtrip(tmp_path):
    a, b = TUT(tiny()), TUT(tiny())
    torch.save({"model": a.state_dict(), "config": {"model": "tut", "model_config": to_dict(a.config)}},
               tmp_path / "ckpt.pt")
    b.load_weights(tmp_path / "ckpt.pt")
    c = TUT.from_file(tmp_path / "ckpt.pt")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]) and torch.equal(value, c.state_dict()[key])
    torch.save(a.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="stores no model config"):
        TUT.from_file(tmp_path / "plain.pt")


# ---- losses ----------------------------------------------------------------------------------------


def class2boundary_loop(y: list[int]) -> tuple[list[int], list[int]]:
    """The released code's class2boundary, as loops (starts, ends)."""
    starts, ends = [], []
    for t in range(1, len(y) - 1):
        if y[t] != y[t - 1]:
            starts.append(t)
        elif y[t] != y[t + 1]:
            ends.append(t)
    return starts, ends


def test_boundary_rows_match_released_definition():
    labels = [segment_labels(T, seed) for seed, T in enumerate([50, 33, 8])]
    T = 50
    batch = torch.full((3, T), -100, dtype=torch.long)
    for i, y in enumerate(labels):
        batch[i, : y.numel()] = y
    rows = boundary_rows(batch, torch.tensor([y.numel() for y in labels]))
    for i, y in enumerate(labels):
        starts, ends = class2boundary_loop(y.tolist())
        got_starts = rows.rows[i][rows.valid[i] & rows.is_start[i]].tolist()
        got_ends = rows.rows[i][rows.valid[i] & ~rows.is_start[i]].tolist()
        assert (got_starts, got_ends) == (starts, ends)


def test_boundary_targets_downsample_like_the_model():
    config = tiny()
    y = segment_labels(37, 3)
    targets = boundary_targets(y[None], None, config)
    down = F.interpolate(y[None, None].float(), size=18, mode="nearest").long()[0, 0]
    starts, ends = class2boundary_loop(down.tolist())
    valid = targets.encoder.valid[0]
    assert targets.encoder.rows[0][valid & targets.encoder.is_start[0]].tolist() == starts
    assert targets.encoder.rows[0][valid & ~targets.encoder.is_start[0]].tolist() == ends
    assert targets.decoder is None
    assert boundary_targets(y[None], None, tiny(beta=0.0)) == (None, None)
    both = boundary_targets(y[None], None, tiny(boundary_layers="encoder+decoder"))
    assert both.decoder.rows.shape[1] == sum(map(len, class2boundary_loop(y.tolist())))


def test_boundary_prior_and_kl():
    prior = boundary_prior(5)
    torch.testing.assert_close(prior, torch.tensor([[0, 0, 1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3, 0, 0]]))
    probs = torch.softmax(torch.randn(2, 3, 4, 5), -1)
    rows = boundary_rows(torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 1]]), torch.tensor([8, 8]))
    # video 0: starts 2, 5; ends 1, 4; video 1: start 1, no end  ->  R = 4 (2 starts + 2 ends, padded)
    assert rows.rows.shape == (2, 4)
    kl = boundary_kl(probs, rows, 5)
    eps = 1e-5
    want = 0.0
    for is_start in (True, False):
        p = prior[0 if is_start else 1]
        terms = [(p * (torch.log(p + eps) - torch.log(probs[b, h, r] + eps))).sum()
                 for b in range(2) for r in range(4) for h in range(3)
                 if rows.valid[b, r] and bool(rows.is_start[b, r]) == is_start]
        want += sum(terms) / len(terms)
    torch.testing.assert_close(kl, want)


def test_smoothing_loss_is_mstcn():
    torch.manual_seed(0)
    logits = (torch.randn(1, 30, 4) * 8).requires_grad_()
    got = smoothing_loss(logits, None, 4.0)
    p = logits.transpose(1, 2)  # MS-TCN layout [B, C, T]
    want = torch.mean(torch.clamp(F.mse_loss(F.log_softmax(p[:, :, 1:], 1), F.log_softmax(p.detach()[:, :, :-1], 1),
                                             reduction="none"), min=0, max=16))
    torch.testing.assert_close(got, want)
    got.backward()
    # no gradient through the previous frame: frame 0 is only ever a previous frame
    assert (logits.grad[:, 0] == 0).all()


def test_loss_ignores_padding():
    torch.manual_seed(0)
    config = tiny(input_dropout=0.0, ffn_dropout=0.0, attention_dropout=0.0)
    model = TUT(config)
    lengths = torch.tensor([40, 26])
    x = torch.randn(2, 40, 12)
    y = torch.stack([segment_labels(40, 0), segment_labels(40, 1)])
    loss_a, _ = compute_loss(model, x, y, lengths)
    x[1, 26:], y[1, 26:] = 5.0, 3
    loss_b, _ = compute_loss(model, x, y, lengths)
    for a, b in zip(loss_a, loss_b, strict=True):
        torch.testing.assert_close(a, b)
    assert loss_a.boundary > 0


def test_boundary_loss_needs_rows_from_the_model():
    model = TUT(tiny())
    y = segment_labels(30, 0)[None]
    out = model(torch.randn(1, 30, 12))
    with pytest.raises(ValueError, match="no attention rows"):
        tut_loss(out, y, None, model.config, boundary_targets(y, None, model.config))


# ---- gradient flow ---------------------------------------------------------------------------------


PAPER = {"decoder_kv": "paper", "decoder_rpb": True, "boundary_layers": "encoder+decoder",
         "attention_dropout_on": "probs"}


@pytest.mark.parametrize("config", [tiny(), tiny(**PAPER)])
def test_every_parameter_gets_a_gradient(config):
    torch.manual_seed(0)
    model = TUT(config).train()
    lengths = torch.tensor([45, 31])
    y = torch.stack([segment_labels(45, 0), segment_labels(45, 2)])
    loss, _ = compute_loss(model, torch.randn(2, 45, 12), y, lengths)
    loss.total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_boundary_loss_reaches_first_encoder_queries_and_keys():
    torch.manual_seed(0)
    model = TUT(tiny())
    y = torch.stack([segment_labels(60, 0), segment_labels(60, 1)])
    loss, _ = compute_loss(model, torch.randn(2, 60, 12), y)
    loss.boundary.backward()
    for stage in model.stages:
        attn = stage.encoder[0].attn
        for proj in (attn.q_proj, attn.k_proj):
            assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
        assert attn.rpb.table.grad.abs().sum() > 0
    # the attention distribution does not read values; earlier stages' values do get gradient,
    # through the probabilities that feed the next stage's queries and keys
    last = model.stages[-1]
    assert last.encoder[0].attn.v_proj.weight.grad is None and last.classifier.weight.grad is None
    assert model.stages[0].encoder[0].attn.v_proj.weight.grad is not None


def test_attention_dropout_on_output_is_dropout_before_out_proj():
    model = TUT(tiny(attention_dropout=0.5))
    attn = model.stages[0].encoder[0].attn
    assert attn.dropout == 0.0 and attn.out_proj.p == 0.5  # probabilities untouched, output dropped
    probs_mode = TUT(tiny(attention_dropout=0.5, attention_dropout_on="probs")).stages[0].encoder[0].attn
    assert probs_mode.dropout == 0.5 and type(probs_mode.out_proj) is torch.nn.Linear
    model.eval()
    x = torch.randn(1, 20, 12)
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)


def test_rpb_module_is_fastlocal():
    assert isinstance(TUT(tiny()).encoder_rpb[0], RelativePositionBias)


# ---- training check ------------------------------------------------------------------------------------


def train_linear(train: MSTCNDataset, config: engine.TrainConfig, steps_per_epoch: int) -> torch.nn.Linear:
    """A frame-wise linear classifier with TUT's budget: same epochs, optimizer steps, lr and Adam betas."""
    torch.manual_seed(0)
    videos = list(train)
    dim, classes = train[0].features.shape[1], train.num_classes
    linear = torch.nn.Linear(dim, classes)
    opt = torch.optim.Adam(linear.parameters(), lr=config.lr, betas=config.betas)
    for epoch in range(config.epochs):
        order = np.random.default_rng(epoch).permutation(len(videos))
        for batch in np.array_split(order, steps_per_epoch):
            x = torch.cat([torch.from_numpy(videos[i].features) for i in batch])
            y = torch.cat([torch.from_numpy(videos[i].labels) for i in batch])
            opt.zero_grad()
            F.cross_entropy(linear(x), y).backward()
            opt.step()
    return linear


def test_training_check_beats_a_linear_classifier(tmp_path):
    """TUT (small preset) learns the synthetic grammar: F1@50 >= 60 on held-out videos, far above a
    frame-wise linear classifier trained with the same budget (which cannot tell twin classes
    apart and flickers)."""
    spec = SyntheticSpec(videos=32, min_length=300, max_length=800, classes=10, dim=32, splits=4, seed=0)
    root = generate(tmp_path / "syn", spec)
    train, test = MSTCNDataset(root, 1, "train"), MSTCNDataset(root, 1, "test")
    config = PRESETS["small"].model.replace(input_dim=spec.dim, num_classes=spec.classes)
    training = PRESETS["small"].train
    training = type(training)(**{**to_dict(training), "epochs": 12, "batch_size": 2, "eval_every": 0})
    task = TUTTask(config, train, test)
    model, history = engine.fit(task, training, progress=False, log=None)
    tut = engine.evaluate(task, model)

    linear = train_linear(train, training, steps_per_epoch=math.ceil(len(train) / training.batch_size))
    with torch.no_grad():
        preds = [linear(torch.from_numpy(v.features)).argmax(-1).numpy() for v in test]
    base = segmentation_scores(preds, [v.labels for v in test])
    print(f"F1@50 TUT {tut['F1@50']:.1f} (acc {tut['acc']:.1f}) vs linear {base['F1@50']:.1f} (acc {base['acc']:.1f})")
    assert history[-1]["loss"] < history[0]["loss"]
    assert tut["F1@50"] >= 60.0
    assert base["F1@50"] < 30.0
    assert tut["F1@50"] >= base["F1@50"] + 40.0
    assert tut["acc"] > base["acc"]


# ---- CLI ----------------------------------------------------------------------------------------------


def test_cli_train_resume_eval(tmp_path, capsys):
    generate(tmp_path / "data", SyntheticSpec(videos=4, min_length=60, max_length=120, classes=8, dim=8, splits=2))
    run = tmp_path / "run"
    common = ["--data", str(tmp_path / "data"), "--preset", "small", "--split", "1", "--out", str(run),
              "--no-progress"]
    assert cli(["train", *common, "--epochs", "1"]) == 0
    assert (run / "last.pt").is_file() and (run / "config.json").is_file()
    assert cli(["train", *common, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "after epoch 1" in out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    want = {"loss", "ce", "smooth", "boundary", "train_acc", "lr", "eval_F1@50", "eval_edit", "eval_acc"}
    assert want <= records[-1].keys()
    # eval through the module entry point, in a fresh process
    proc = subprocess.run([sys.executable, "-m", "fastlocal.models.tut", "eval", *common], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "F1@50=" in proc.stdout
    scores = json.loads((run / "eval.json").read_text())
    assert scores["split"] == 1 and 0 <= scores["acc"] <= 100
    test_videos = MSTCNDataset(tmp_path / "data", 1, "test")
    for video in test_videos:
        lines = (run / "predictions" / f"{video.name}.txt").read_text().splitlines()
        assert len(lines) == video.full_labels.size and set(lines) <= set(test_videos.classes)
    pytest.importorskip("matplotlib")
    assert len(list((run / "plots").glob("*.png"))) == len(test_videos)


def test_cli_errors(tmp_path, capsys):
    assert cli(["eval", "--data", str(tmp_path / "missing"), "--preset", "small", "--out", str(tmp_path / "r")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
    generate(tmp_path / "data", SyntheticSpec(videos=4, min_length=30, max_length=40, classes=8, dim=8, splits=2))
    assert cli(["eval", "--data", str(tmp_path / "data"), "--preset", "small", "--out", str(tmp_path / "r")]) == 2
    assert "no weights to evaluate" in capsys.readouterr().err
