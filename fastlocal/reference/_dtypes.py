import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of every op: float64 stays float64, everything else computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
