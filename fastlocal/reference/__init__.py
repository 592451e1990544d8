"""Pure-PyTorch reference implementations: the semantic definition of every op.

One module per op (``local_attention``, ``topk_std``, ``roi_align_1d``, ``nms_1d``). Their
functions take arguments already validated and resolved by the public op in
``fastlocal`` (e.g. ``left``/``right`` instead of ``window``); call the public op
with ``backend="reference"`` to run them with argument checking.
"""
