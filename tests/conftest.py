"""Test-session set-up shared by every test module.

Without a CUDA device, Triton kernels run through Triton's interpreter on CPU tensors
(docs/design.md, "Backends and dispatch"), so the ``triton`` backend is tested here at small
sizes. The variable must be set before any ``@triton.jit`` function is defined, that is
before ``fastlocal.kernels`` is imported: this file is imported first.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny problems (a block of <= ~100 queries, a gradcheck on
    T <= 9): intra-op threads only add synchronisation, and on a shared 2-core runner OpenMP's
    barriers stall (test_local_attention took 30 s idle and 70 s beside one busy process).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
