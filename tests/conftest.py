"""Test-session set-up shared by every test module.

Without a CUDA device, Triton kernels run through Triton's interpreter on CPU tensors
(docs/design.md, "Backends and dispatch"), so the ``triton`` backend is tested here at small
sizes. The variable must be set before any ``@triton.jit`` function is defined, that is
before ``fastlocal.kernels`` is imported: this file is imported first.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
