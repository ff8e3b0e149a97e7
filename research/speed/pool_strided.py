# The size1m encoder's four 2x2 max-pools (bf16, channels-last, with a scale and SiLU after), compiled, fwd+bwd:
# the opaque reverie::max_pool2 op against a strided 4-way torch.maximum the compiler fuses.
import sys, time
import reverie  # noqa
import numpy as np, torch
from reverie.nets import MaxPool2
torch.set_num_threads(2)
dtype = torch.bfloat16
def strided(x):
    a = torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2])
    b = torch.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2])
    return torch.maximum(a, b)
mp = MaxPool2()
def opaque(x): return mp(x)
def block_op(x, w): return torch.nn.functional.silu(opaque(x) * w)
def block_st(x, w): return torch.nn.functional.silu(strided(x) * w)
fns = {"opaque": torch.compile(block_op), "strided": torch.compile(block_st)}
tot = {k: 0.0 for k in fns}
for C, H in ((4, 64), (8, 32), (16, 16), (32, 8)):
    x0 = torch.randn(1024, C, H, H, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1, C, 1, 1, dtype=dtype)
    res = {}
    for name, fn in fns.items():
        x = x0.clone().requires_grad_(True)
        out = fn(x, w); g = torch.randn_like(out); out.backward(g)
        ts = []
        for _ in range(7):
            x.grad = None
            t = time.perf_counter(); fn(x, w).backward(g); ts.append(time.perf_counter() - t)
        res[name] = (np.median(ts) * 1000, x.grad.clone())
        tot[name] += res[name][0]
    same = torch.equal(res["opaque"][1], res["strided"][1])
    print(C, H, {k: round(v[0], 1) for k, v in res.items()}, "grads equal", same, flush=True)
print(tot)
