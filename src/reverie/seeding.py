"""One seed for Python's, numpy's and torch's global generators."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every GPU).

    Example:
        >>> seed_everything(3); a = torch.rand(1); seed_everything(3)
        >>> bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
