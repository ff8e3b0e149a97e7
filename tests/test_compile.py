"""``train.compile``: the compiled update computes what the eager one computes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._inductor.config as inductor_config

from reverie.config import make_config
from reverie.envs.base import Space
from reverie.learner import Learner
from reverie.nets import MaxPool2, UpConv

SPACE = {"image": Space(np.uint8, (64, 64, 3), 0, 255), "obs": Space(np.float32, (3,))}
ACTIONS = Space(np.int64, (), 0, 5, discrete=True)

needs_compiler = pytest.mark.skipif(
    not shutil.which(os.environ.get("CXX", "g++")), reason="torch.compile on a CPU needs a C++ compiler (g++ or $CXX)"
)


def batch(B: int, T: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (B, T, 64, 64, 3), dtype=np.uint8),
        "obs": rng.normal(size=(B, T, 3)).astype(np.float32),
        "action": rng.integers(0, ACTIONS.n, (B, T)),
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "is_first": np.zeros((B, T), bool),
        "is_terminal": np.eye(B, T, T - 1, dtype=bool),
    }


@needs_compiler
@pytest.mark.slow
def test_compiled_update_matches_the_eager_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """One online update (world model with conv encoder and decoder, imagination, actor, critic, replay value),
    eager and compiled, from the same weights on the same batch and the same random draws (inductor draws them as
    eager torch does, ``fallback_random``): the losses agree to 1e-4 relative, every gradient to 1e-3 relative
    (fp32), and the state dict is the plain module's."""
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    data = batch(3, 6, seed=1)
    out = []
    for compiled in (False, True):
        torch.manual_seed(0)
        learner = Learner(make_config(["debug"], [f"train.compile={compiled}", "train.device=cpu"]), SPACE, ACTIONS)
        torch.manual_seed(1)
        metrics = learner.update(data, "online")
        grads = {name: p.grad.clone() for name, p in learner.named_parameters() if p.grad is not None}
        out.append((metrics, grads, list(learner.state_dict())))
    (m_eager, g_eager, keys_eager), (m_comp, g_comp, keys_comp) = out
    assert keys_eager == keys_comp
    assert "online" in learner._compiled  # the second learner ran the compiled program
    losses = [k for k in m_eager if k.startswith("loss/")]
    assert {"loss/rec", "loss/dyn", "loss/actor", "loss/critic", "loss/repval"} <= set(losses)
    for key in losses:
        assert m_comp[key] == pytest.approx(m_eager[key], rel=1e-4, abs=1e-6), key
    assert g_eager.keys() == g_comp.keys() and len(g_eager) > 20
    for name, grad in g_eager.items():
        torch.testing.assert_close(g_comp[name], grad, rtol=1e-3, atol=1e-6, msg=name)


def test_upconv_is_upsampling_then_a_5x5_conv() -> None:
    """:class:`UpConv` (a 3x3 conv to four phases, then a pixel shuffle) is nearest 2x upsampling followed by the
    5x5 conv of its weights, in value and in every gradient."""
    torch.manual_seed(0)
    conv = UpConv(5, 3)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 5, 6, 7, requires_grad=True)
    y = conv(x)
    upsampled = torch.nn.functional.interpolate(x, scale_factor=2.0)
    ref = torch.nn.functional.conv2d(upsampled, conv.weight, conv.bias, padding=2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    target = torch.randn_like(ref)
    grads = torch.autograd.grad(((y - target) ** 2).sum(), [x, conv.weight, conv.bias])
    grads_ref = torch.autograd.grad(((ref - target) ** 2).sum(), [x, conv.weight, conv.bias])
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_max_pool2_is_max_pooling() -> None:
    """:class:`MaxPool2` (one opaque op for the compiler) is 2x2 max pooling, in value, gradient and layout."""
    x = torch.randn(2, 4, 8, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = MaxPool2()(x)
    ref = torch.nn.functional.max_pool2d(x, 2)
    assert torch.equal(y, ref) and y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(ref)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@pytest.mark.parametrize("preset", [None, "/somewhere/else"])
def test_compiled_code_is_cached_where_a_later_run_finds_it(preset: str | None, tmp_path: Path) -> None:
    """``import reverie`` points torch's compile cache at the user's cache folder (torch's own default is under
    /tmp, gone after a reboot) before torch compiles anything; a folder the user chose is kept."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | {"XDG_CACHE_HOME": str(tmp_path)}
    if preset:
        env["TORCHINDUCTOR_CACHE_DIR"] = preset
    code = (
        "import reverie, torch; torch.compile(lambda x: x); "
        "from torch._inductor.runtime.cache_dir_utils import cache_dir; print(cache_dir())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (preset or str(tmp_path / "reverie" / "torch-compile"))
