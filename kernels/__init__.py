"""Triton kernels, installed as ``fastlocal.kernels`` (one module per op: ``kernels/<op>.py``).

Imported lazily by the dispatcher, only when the ``triton`` backend is chosen, so
``import fastlocal`` never needs Triton.
"""
