"""pytest-benchmark: one end-to-end ETAD-style training step, full backprop against encoder gradient sampling.

:class:`fastlocal.bench.encoder_sampling.EncoderSampling`: a small R(2+1)D (early stages frozen,
BatchNorm in eval mode) encodes a short sequence of snippets, a temporal head
classifies every snippet, backward, AdamW over the two learning-rate groups; full backprop,
per-chunk checkpointing and EGS at ratios 0.1 and 0.3 (the paper's Table 3), measured by
``conftest.py``'s harness: the median of 3 steps and the peak memory of one step in a fresh
process; ``extra_info`` also holds both as a fraction of full backprop's. The run ends with one table.

Run with ``pytest benchmarks/test_encoder_sampling.py --benchmark-only``.
"""

from __future__ import annotations

from fastlocal.models.backbones import sampled_snippets

from fastlocal.bench.encoder_sampling import EncoderSampling, backbone_parameters
from fastlocal.bench.suite import Result

SUITE = EncoderSampling()
_FULL: dict[object, Result] = {}  # config -> full backprop's result, for the fractions


def test_encoder_sampling_training_step(benchmark, run_case, config, mode: str, method: str) -> None:
    result = run_case(SUITE, method, config, mode)
    if method == "full":
        _FULL[config] = result
    full = _FULL.get(config)
    benchmark.extra_info["backbone_parameters"] = backbone_parameters(config)
    if method.startswith("egs-"):
        benchmark.extra_info["sampled_snippets"] = sampled_snippets(config.snippets, float(method[4:]))
    if full is not None and full.seconds and result.seconds is not None:
        benchmark.extra_info["time_vs_full"] = result.seconds / full.seconds
    if full is not None and full.mb and result.mb is not None:
        benchmark.extra_info["peak_vs_full"] = result.mb / full.mb
