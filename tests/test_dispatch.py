"""Backend selection (docs/design.md, "Backends and dispatch").

Which implementation ran is observed two ways:
- for ops with a compiled cpu kernel (roi_align_1d, nms_1d), spies replace the kernel in
  ``fastlocal._C`` and the function in ``fastlocal.reference.*``; each spy forwards to the
  real function and records that it ran;
- for every op, a spy on the op module's ``resolve_backend`` records the backend chosen
  (so the tests stay true when new kernels land: expectations are derived from the
  module's ``IMPLEMENTED``).

There is no GPU and no Triton here; missing-backend situations beyond that are simulated
by patching what ``_dispatch._probe`` looks at, and its cache is cleared around them. The
CUDA-tensor fallback warning is tested with ``torch.device("cuda", i)`` objects (creating
one needs no GPU) and a patched ``_probe``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
import threading
import types
import warnings

import pytest
import torch

import fastlocal
from fastlocal import _C, _dispatch
from fastlocal.reference import nms_1d as ref_nms
from fastlocal.reference import roi_align_1d as ref_roi

LA = importlib.import_module("fastlocal.local_attention")  # fastlocal.local_attention is the function
TOPK = importlib.import_module("fastlocal.topk_std")
ROI = importlib.import_module("fastlocal.roi_align_1d")
NMS = importlib.import_module("fastlocal.nms_1d")

ENV = _dispatch.ENV_VAR
ALL = ("cuda", "triton", "cpu", "reference")
UNAVAILABLE = tuple(name for name, why in fastlocal.available_backends().items() if why != "available")


@pytest.fixture(autouse=True)
def _clean_request(monkeypatch):
    """No FASTLOCAL_BACKEND from the caller's shell, a fresh probe cache around each test, and
    no fallback warning remembered from an earlier test."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(_dispatch, "_FALLBACK_WARNED", set())
    _dispatch._probe.cache_clear()
    yield
    _dispatch._probe.cache_clear()


# ---- inputs and calls for every public op ---------------------------------------------------


def _qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 2, 6, 4, generator=g) for _ in range(3))


X = torch.randn(2, 3, 10)
ROIS = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.5, 9.0]])
SEGMENTS = torch.tensor([[0.0, 4.0], [1.0, 4.5], [6.0, 9.0]])
SCORES = torch.tensor([0.9, 0.8, 0.7])


def _call_la(backend=None):
    q, k, v = _qkv()
    return fastlocal.local_attention(q, k, v, 3, backend=backend)


def _call_lap(backend=None):
    q, k, _ = _qkv()
    return fastlocal.local_attention_probs(q, k, torch.tensor([0, 5]), 3, backend=backend)


def _call_pool(backend=None):
    return fastlocal.topk_std_pool(torch.softmax(torch.randn(1, 2, 6, 6), -1), 2, backend=backend)


def _call_tsa(backend=None):
    q, k, v = _qkv()
    return fastlocal.topk_std_attention(q, k, v, 2, backend=backend)


def _call_roi(backend=None):
    return fastlocal.roi_align_1d(X, ROIS, 4, backend=backend)


def _call_nms(backend=None):
    return fastlocal.nms_1d(SEGMENTS, SCORES, 0.5, backend=backend)


def _call_bnms(backend=None):
    return fastlocal.batched_nms_1d(SEGMENTS, SCORES, torch.tensor([0, 0, 1]), 0.5, backend=backend)


def _call_snms(backend=None):
    return fastlocal.soft_nms_1d(SEGMENTS, SCORES, backend=backend)


# op name (as passed to resolve_backend), its module, what it implements, how to call it
OPS = {
    "local_attention": (LA, LA.IMPLEMENTED, _call_la),
    "local_attention_probs": (LA, LA.IMPLEMENTED, _call_lap),
    "topk_std_pool": (TOPK, TOPK.POOL_IMPLEMENTED, _call_pool),
    "topk_std_attention": (TOPK, TOPK.IMPLEMENTED, _call_tsa),
    "roi_align_1d": (ROI, ROI.IMPLEMENTED, _call_roi),
    "nms_1d": (NMS, NMS.IMPLEMENTED, _call_nms),
    "batched_nms_1d": (NMS, NMS.IMPLEMENTED, _call_bnms),
    "soft_nms_1d": (NMS, NMS.SOFT_NMS_IMPLEMENTED, _call_snms),
}


def _spy_choice(monkeypatch, op: str) -> list[str]:
    """Record the backends ``resolve_backend`` picks for ``op``."""
    module, _, _ = OPS[op]
    real = module.resolve_backend
    chosen: list[str] = []

    def spy(name, *args, **kwargs):
        result = real(name, *args, **kwargs)
        if name == op:
            chosen.append(result)
        return result

    monkeypatch.setattr(module, "resolve_backend", spy)
    return chosen


def _choice(monkeypatch, op: str, backend=None) -> str:
    chosen = _spy_choice(monkeypatch, op)
    OPS[op][2](backend)
    assert len(chosen) == 1, chosen
    return chosen[0]


class Ran:
    """Spies on the cpu kernel and the reference function of roi_align_1d and nms_1d."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for owner, attr, label in (
            (_C, "roi_align_1d_forward", "cpu"),
            (ref_roi, "roi_align_1d", "reference"),
            (_C, "nms_1d", "cpu"),
            (ref_nms, "nms_1d", "reference"),
        ):
            monkeypatch.setattr(owner, attr, self._wrap(getattr(owner, attr), label))

    def _wrap(self, fn, label):
        def spy(*args, **kwargs):
            self.calls.append(label)
            return fn(*args, **kwargs)

        return spy

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def ran(monkeypatch) -> Ran:
    return Ran(monkeypatch)


# ---- available_backends ------------------------------------------------------------------------


def test_available_backends_reports_all_four():
    report = fastlocal.available_backends()
    assert tuple(report) == ALL
    assert all(isinstance(why, str) and why for why in report.values())
    assert report["cpu"] == "available"
    assert report["reference"] == "available"


def test_available_backends_says_why_cuda_is_missing():
    why = fastlocal.available_backends()["cuda"]
    if torch.version.cuda is None:
        assert "extension not built" in why and "has no CUDA" in why and torch.__version__ in why
    elif not torch.cuda.is_available():
        assert why != "available" and ("not built" in why or "no CUDA device" in why)
    else:
        pytest.skip("this machine has CUDA: the cuda backend may be available")


def test_available_backends_says_why_triton_is_missing():
    why = fastlocal.available_backends()["triton"]
    if importlib.util.find_spec("triton") is None:
        assert "triton is not installed" in why
    elif not torch.cuda.is_available():
        assert "no CUDA device" in why and "TRITON_INTERPRET=1" in why
    else:
        pytest.skip("this machine has a GPU and triton: the triton backend may be available")


def test_simulated_missing_cpu_extension(monkeypatch, ran):
    """Without fastlocal._C, 'cpu' reports the import error, automatic choice falls back to
    'reference', and an explicit request for 'cpu' raises with the reason."""
    monkeypatch.setitem(sys.modules, "fastlocal._C", None)  # makes `import fastlocal._C` fail
    _dispatch._probe.cache_clear()
    why = fastlocal.available_backends()["cpu"]
    assert why.startswith("extension not built: fastlocal._C failed to import")
    expected = fastlocal.roi_align_1d(X, ROIS, 4, backend="reference")
    ran.take()
    torch.testing.assert_close(fastlocal.roi_align_1d(X, ROIS, 4), expected)
    assert ran.take() == ["reference"]
    with pytest.raises(fastlocal.BackendUnavailableError, match="not available: extension not built"):
        fastlocal.roi_align_1d(X, ROIS, 4, backend="cpu")
    assert ran.take() == []


def test_simulated_triton_under_interpreter(monkeypatch):
    """An importable triton with TRITON_INTERPRET=1 is available on CPU tensors; an op with no
    Triton kernel still refuses an explicit request rather than running something else."""
    # The first custom-op call imports torch._dynamo, which reads triton.language when triton is
    # importable: import it before the stand-in module (with no .language) replaces triton.
    importlib.import_module("torch._dynamo")
    monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))
    _dispatch._probe.cache_clear()
    assert "no CUDA device" in fastlocal.available_backends()["triton"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _dispatch._probe.cache_clear()
    assert fastlocal.available_backends()["triton"] == "available"
    for op, (_, implemented, call) in OPS.items():
        if "triton" in implemented:
            continue
        with pytest.raises(fastlocal.BackendUnavailableError, match=rf"{op}: backend 'triton' .* has no kernel"):
            call("triton")
    # Automatic choice on CPU tensors never picks triton, even when it could run.
    assert _choice(monkeypatch, "roi_align_1d") == "cpu"


def test_simulated_cuda_build_without_extension(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setitem(sys.modules, "fastlocal._C_cuda", None)
    _dispatch._probe.cache_clear()
    why = fastlocal.available_backends()["cuda"]
    assert why.startswith("extension not built: fastlocal._C_cuda failed to import")


# ---- per-call backend= -----------------------------------------------------------------------------


def test_backend_keyword_picks_the_implementation(ran):
    out_cpu = fastlocal.roi_align_1d(X, ROIS, 4, backend="cpu")
    assert ran.take() == ["cpu"]
    out_ref = fastlocal.roi_align_1d(X, ROIS, 4, backend="reference")
    assert ran.take() == ["reference"]
    torch.testing.assert_close(out_cpu, out_ref)

    keep_cpu = fastlocal.nms_1d(SEGMENTS, SCORES, 0.5, backend="cpu")
    assert ran.take() == ["cpu"]
    keep_ref = fastlocal.nms_1d(SEGMENTS, SCORES, 0.5, backend="reference")
    assert ran.take() == ["reference"]
    assert keep_cpu.tolist() == keep_ref.tolist() == [0, 2]


def test_backend_keyword_reaches_the_backward_kernel(monkeypatch):
    calls = []
    real = _C.roi_align_1d_backward

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(_C, "roi_align_1d_backward", spy)
    x = X.clone().requires_grad_()
    fastlocal.roi_align_1d(x, ROIS, 4, backend="reference").sum().backward()
    assert calls == []
    grad_ref, x.grad = x.grad, None
    fastlocal.roi_align_1d(x, ROIS, 4, backend="cpu").sum().backward()
    assert len(calls) == 1
    torch.testing.assert_close(x.grad, grad_ref)


@pytest.mark.parametrize("op", OPS)
def test_backend_keyword_reference_runs_everywhere(monkeypatch, op):
    assert _choice(monkeypatch, op, "reference") == "reference"


@pytest.mark.parametrize("op", OPS)
def test_default_choice_on_cpu_tensors(monkeypatch, op):
    """CPU tensors -> 'cpu' when the op has a cpu kernel (the extension is built here), else 'reference'."""
    _, implemented, _ = OPS[op]
    assert fastlocal.available_backends()["cpu"] == "available"
    expected = "cpu" if "cpu" in implemented else "reference"
    assert _choice(monkeypatch, op) == expected


def test_default_choice_runs_the_cpu_kernel(ran):
    fastlocal.roi_align_1d(X, ROIS, 4)
    fastlocal.nms_1d(SEGMENTS, SCORES, 0.5)
    assert ran.take() == ["cpu", "cpu"]


def test_default_order_for_cuda_tensors_without_cuda_or_triton(monkeypatch):
    """CUDA tensors: cuda -> triton -> reference; never the cpu kernel."""
    real = _dispatch._missing
    monkeypatch.setattr(_dispatch, "_missing", lambda name: "not here" if name in ("cuda", "triton") else real(name))
    device = torch.device("cuda")
    with pytest.warns(fastlocal.ReferenceFallbackWarning, match="op on cuda runs the pure-PyTorch reference"):
        assert _dispatch.resolve_backend("op", device, None, ("cuda", "triton", "cpu", "reference")) == "reference"
    with pytest.raises(fastlocal.BackendUnavailableError, match="cannot run on cuda tensors"):
        _dispatch.resolve_backend("op", device, "cpu", ("cpu", "reference"))


@pytest.mark.parametrize("op", OPS)
def test_requesting_cpu_without_a_cpu_kernel_raises(monkeypatch, op, ran):
    _, implemented, call = OPS[op]
    if "cpu" in implemented:
        assert _choice(monkeypatch, op, "cpu") == "cpu"
    else:
        with pytest.raises(fastlocal.BackendUnavailableError, match=rf"{op}: backend 'cpu' .*has no kernel"):
            call("cpu")
        assert ran.take() == []


def test_local_attention_has_no_cpu_kernel_yet_or_uses_it(monkeypatch):
    """The explicit case the brief names, derived from IMPLEMENTED (stays true when the kernel lands)."""
    if "cpu" in LA.IMPLEMENTED:
        assert _choice(monkeypatch, "local_attention", "cpu") == "cpu"
    else:
        with pytest.raises(fastlocal.BackendUnavailableError, match="implemented: reference"):
            _call_la("cpu")


# ---- unavailable and unknown backends ------------------------------------------------------------


@pytest.mark.parametrize("name", UNAVAILABLE)
@pytest.mark.parametrize("op", OPS)
def test_unavailable_backend_raises_with_reason(op, name, ran):
    reason = fastlocal.available_backends()[name]
    with pytest.raises(fastlocal.BackendUnavailableError) as info:
        OPS[op][2](name)
    message = str(info.value)
    assert f"backend {name!r}" in message and "backend=" in message and reason in message
    assert ran.take() == []  # no silent fallback: nothing ran


@pytest.mark.parametrize("name", UNAVAILABLE)
def test_unavailable_backend_from_context_or_env_raises(monkeypatch, name, ran):
    with fastlocal.use_backend(name), pytest.raises(fastlocal.BackendUnavailableError, match="use_backend"):
        _call_roi()
    monkeypatch.setenv(ENV, name)
    with pytest.raises(fastlocal.BackendUnavailableError, match=ENV):
        _call_nms()
    assert ran.take() == []


def test_backend_unavailable_error_is_a_runtime_error():
    assert issubclass(fastlocal.BackendUnavailableError, RuntimeError)


@pytest.mark.parametrize("bad", ["CPU", "gpu", "", "torch"])
@pytest.mark.parametrize("op", OPS)
def test_unknown_backend_name_raises_value_error(op, bad):
    with pytest.raises(ValueError, match="backend"):
        OPS[op][2](bad)


def test_unknown_backend_name_in_context_raises_on_entry():
    with pytest.raises(ValueError, match="backend must be one of"), fastlocal.use_backend("Reference"):
        pass  # pragma: no cover - never reached
    with pytest.raises(TypeError, match="backend must be a str"), fastlocal.use_backend(1):
        pass  # pragma: no cover - never reached


def test_unknown_backend_name_in_env_raises(monkeypatch):
    monkeypatch.setenv(ENV, "fastest")
    with pytest.raises(ValueError, match=rf"backend \(from {ENV}\) must be one of"):
        _call_roi()


# ---- use_backend ---------------------------------------------------------------------------------------


def test_use_backend_selects_nests_and_restores(ran):
    _call_roi()
    assert ran.take() == ["cpu"]
    with fastlocal.use_backend("reference"):
        _call_roi()
        assert ran.take() == ["reference"]
        with fastlocal.use_backend("cpu"):
            _call_roi()
            assert ran.take() == ["cpu"]
            with fastlocal.use_backend(None):  # automatic choice inside
                _call_nms()
                assert ran.take() == ["cpu"]
            _call_nms()
            assert ran.take() == ["cpu"]
        _call_roi()
        _call_nms()
        assert ran.take() == ["reference", "reference"]
    _call_roi()
    assert ran.take() == ["cpu"]


def test_use_backend_none_inside_request_gives_automatic_choice(ran):
    with fastlocal.use_backend("reference"), fastlocal.use_backend(None):
        _call_roi()
    assert ran.take() == ["cpu"]


def test_use_backend_restores_on_exception(ran):
    with pytest.raises(KeyError), fastlocal.use_backend("reference"):
        raise KeyError("boom")
    _call_roi()
    assert ran.take() == ["cpu"]
    # an op failing inside the block also unwinds it
    with pytest.raises(fastlocal.BackendUnavailableError), fastlocal.use_backend("cuda"):
        _call_roi()
    _call_roi()
    assert ran.take() == ["cpu"]
    assert getattr(_dispatch._local, "stack", []) == []


def test_use_backend_is_per_thread(ran):
    seen = []

    def other():
        seen.append(_dispatch.resolve_backend("roi_align_1d", torch.device("cpu"), None, ROI.IMPLEMENTED))

    with fastlocal.use_backend("reference"):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        mine = _dispatch.resolve_backend("roi_align_1d", torch.device("cpu"), None, ROI.IMPLEMENTED)
    assert seen == ["cpu"]
    assert mine == "reference"


# ---- FASTLOCAL_BACKEND and precedence ------------------------------------------------------------------


def test_env_var_selects_backend(monkeypatch, ran):
    monkeypatch.setenv(ENV, "reference")
    _call_roi()
    _call_nms()
    assert ran.take() == ["reference", "reference"]
    monkeypatch.setenv(ENV, "cpu")
    _call_roi()
    assert ran.take() == ["cpu"]
    monkeypatch.setenv(ENV, "")  # empty means unset: automatic choice
    _call_roi()
    assert ran.take() == ["cpu"]


def test_env_var_cpu_for_op_without_cpu_kernel_raises(monkeypatch):
    missing = [op for op, (_, implemented, _) in OPS.items() if "cpu" not in implemented]
    monkeypatch.setenv(ENV, "cpu")
    for op in missing:
        with pytest.raises(fastlocal.BackendUnavailableError, match=rf"{op}: .*requested by {ENV}"):
            OPS[op][2]()


def test_precedence_keyword_over_context_over_env(monkeypatch, ran):
    monkeypatch.setenv(ENV, "reference")
    with fastlocal.use_backend("cpu"):
        _call_roi()  # context beats env
        assert ran.take() == ["cpu"]
        _call_roi("reference")  # keyword beats context
        assert ran.take() == ["reference"]
    _call_roi()  # env again once the context exits
    assert ran.take() == ["reference"]
    _call_roi("cpu")  # keyword beats env
    assert ran.take() == ["cpu"]


@pytest.mark.parametrize("name", UNAVAILABLE)
def test_higher_precedence_request_shadows_unavailable_lower_one(monkeypatch, name, ran):
    """A lower-precedence request is not consulted at all, even when it names a missing backend."""
    monkeypatch.setenv(ENV, name)
    with fastlocal.use_backend("reference"):
        _call_roi()
    with fastlocal.use_backend(name):
        _call_roi("cpu")
    assert ran.take() == ["reference", "cpu"]


# ---- CUDA tensors falling back to the reference: ReferenceFallbackWarning ---------------------------------

CUDA0 = torch.device("cuda", 0)  # a device object only: nothing here touches a GPU
NO_CUDA = "extension not built (simulated)"
NO_TRITON = "triton is not installed (simulated)"


def _simulate_gpu_backends(monkeypatch, cuda: str = NO_CUDA, triton: str = NO_TRITON) -> None:
    """``_probe`` reporting ``cuda`` / ``triton`` missing for these reasons ("" = usable), the rest as is.

    ``_probe`` rather than ``_missing`` is patched, so ``_missing`` keeps its Dynamo constant marker."""
    real = _dispatch._probe
    reasons = {"cuda": cuda, "triton": triton}

    @functools.cache
    def probe(name: str):
        if name not in reasons:
            return real(name)
        return (None, reasons[name]) if reasons[name] else (types.ModuleType(name), "")

    monkeypatch.setattr(_dispatch, "_probe", probe)


def _fallback_warnings(call) -> tuple[object, list[str]]:
    """``call()``'s result and the messages of the ReferenceFallbackWarnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count every emission: the once-only rule is fastlocal's own
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, fastlocal.ReferenceFallbackWarning)]


def _resolve_la(device=CUDA0, backend=None, implemented=LA.IMPLEMENTED):
    return _dispatch.resolve_backend("local_attention", device, backend, implemented)


def test_fallback_warning_is_public():
    assert fastlocal.ReferenceFallbackWarning is _dispatch.ReferenceFallbackWarning
    assert "ReferenceFallbackWarning" in fastlocal.__all__
    assert issubclass(fastlocal.ReferenceFallbackWarning, UserWarning)


def test_cuda_fallback_warns_once_with_the_reasons(monkeypatch):
    _simulate_gpu_backends(monkeypatch)
    chosen, messages = _fallback_warnings(_resolve_la)
    assert chosen == "reference"
    assert messages == [
        f"fastlocal: local_attention on cuda:0 runs the pure-PyTorch reference: cuda: {NO_CUDA}; triton: {NO_TRITON}. "
        "Pass backend='reference' (or use fastlocal.use_backend) to choose it explicitly and silence this."
    ]
    for _ in range(3):  # silent afterwards, same answer
        assert _fallback_warnings(_resolve_la) == ("reference", [])


def test_cuda_fallback_warns_once_per_op_and_device(monkeypatch):
    _simulate_gpu_backends(monkeypatch)
    assert len(_fallback_warnings(_resolve_la)[1]) == 1
    # another device: its own warning
    _, messages = _fallback_warnings(lambda: _resolve_la(torch.device("cuda", 1)))
    assert len(messages) == 1 and "local_attention on cuda:1 " in messages[0]
    # another op on the first device: its own warning
    _, messages = _fallback_warnings(
        lambda: _dispatch.resolve_backend("roi_align_1d", CUDA0, None, ROI.IMPLEMENTED)
    )
    assert len(messages) == 1 and messages[0].startswith("fastlocal: roi_align_1d on cuda:0 ")
    # every pair seen: silent
    for device in (CUDA0, torch.device("cuda", 1)):
        assert _fallback_warnings(lambda d=device: _resolve_la(d))[1] == []


def test_cuda_fallback_names_only_the_gpu_kernels_the_op_has(monkeypatch):
    """nms_1d has a cuda kernel but no triton one: only cuda's reason is given."""
    _simulate_gpu_backends(monkeypatch)
    chosen, messages = _fallback_warnings(lambda: _dispatch.resolve_backend("nms_1d", CUDA0, None, NMS.IMPLEMENTED))
    assert chosen == "reference"
    assert len(messages) == 1
    assert f"cuda: {NO_CUDA}" in messages[0] and "triton" not in messages[0].split(". Pass")[0]


REFERENCE_ONLY = [op for op, (_, implemented, _) in OPS.items() if not {"cuda", "triton"} & set(implemented)]


@pytest.mark.parametrize("op", REFERENCE_ONLY)
def test_reference_only_op_on_cuda_is_silent(monkeypatch, op):
    """Ops whose only kernel is the reference (topk_std_pool, soft_nms_1d) run it by design: no warning."""
    _simulate_gpu_backends(monkeypatch)
    implemented = OPS[op][1]
    assert _fallback_warnings(lambda: _dispatch.resolve_backend(op, CUDA0, None, implemented)) == ("reference", [])


def test_explicit_requests_never_warn(monkeypatch):
    _simulate_gpu_backends(monkeypatch)
    assert _fallback_warnings(lambda: _resolve_la(backend="reference")) == ("reference", [])
    with fastlocal.use_backend("reference"):
        assert _fallback_warnings(_resolve_la) == ("reference", [])
    monkeypatch.setenv(ENV, "reference")
    assert _fallback_warnings(_resolve_la) == ("reference", [])
    monkeypatch.delenv(ENV)
    # An explicit request for a missing GPU backend raises, as before, and warns nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastlocal.ReferenceFallbackWarning)
        with pytest.raises(fastlocal.BackendUnavailableError, match=re.escape(NO_TRITON)):
            _resolve_la(backend="triton")
    # The explicit requests did not use up the automatic choice's warning.
    assert len(_fallback_warnings(_resolve_la)[1]) == 1


def test_usable_gpu_backend_or_cpu_tensors_never_warn(monkeypatch):
    _simulate_gpu_backends(monkeypatch, triton="")  # cuda missing, triton usable
    assert _fallback_warnings(_resolve_la) == ("triton", [])
    # CPU tensors that end on the reference (no cpu kernel, or no extension) are not warned about.
    assert _fallback_warnings(lambda: _resolve_la(torch.device("cpu"), implemented=("reference",)))[1] == []
    monkeypatch.setitem(sys.modules, "fastlocal._C", None)
    _dispatch._probe.cache_clear()
    assert _fallback_warnings(lambda: _resolve_la(torch.device("cpu"))) == ("reference", [])


def test_cuda_fallback_warning_gives_the_probed_reasons():
    """Unpatched probes (this machine's real reasons), when neither GPU backend is usable here."""
    report = fastlocal.available_backends()
    if "available" in (report["cuda"], report["triton"]):
        pytest.skip("a GPU backend is usable here")
    _, messages = _fallback_warnings(_resolve_la)
    assert len(messages) == 1
    assert f"cuda: {report['cuda']}; triton: {report['triton']}" in messages[0]


def test_cuda_fallback_warning_keeps_resolve_backend_traceable(monkeypatch):
    """Under torch.compile(fullgraph=True) the warning is emitted while tracing (the function is a
    Dynamo constant, like ``_missing``), once, and the compiled code runs without it."""
    import torch._dynamo

    _simulate_gpu_backends(monkeypatch)

    def fn(x):
        name = _dispatch.resolve_backend("local_attention", torch.device("cuda", 0), None, LA.IMPLEMENTED)
        return x + 1 if name == "reference" else x - 1

    torch._dynamo.reset()
    try:
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        x = torch.zeros(3)
        out, messages = _fallback_warnings(lambda: compiled(x))
        assert torch.equal(out, x + 1)
        assert len(messages) == 1 and "local_attention on cuda:0 " in messages[0]
        assert _fallback_warnings(lambda: compiled(x))[1] == []
    finally:
        torch._dynamo.reset()
