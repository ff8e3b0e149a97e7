import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6"); libc.mallopt(-4, 0); libc.mallopt(-1, ctypes.c_int(2**31 - 1))
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(2)
# rows: output parity a, cols: 5x5 tap k -> low-res offset index (0: -1, 1: 0, 2: +1)
TAPS = torch.tensor([[[1,1,0,0,0],[0,0,1,1,0],[0,0,0,0,1]], [[1,0,0,0,0],[0,1,1,0,0],[0,0,0,1,1]]], dtype=torch.float32)  # (2 parity, 3 offset, 5 tap)
def upconv(x, w, b):
    co, ci = w.shape[:2]
    m = TAPS.to(w.dtype)
    w3 = torch.einsum("ayk,bxl,oikl->oabiyx", m, m, w).reshape(co * 4, ci, 3, 3)
    y = F.conv2d(x, w3.to(x.dtype), b.repeat_interleave(4).to(x.dtype), padding=1)
    return F.pixel_shuffle(y, 2)
def ref(x, w, b):
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w.to(x.dtype), b.to(x.dtype), padding=2)
ci, co, h = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = torch.randn(1024, ci, h, h).contiguous(memory_format=torch.channels_last)
w = torch.randn(co, ci, 5, 5, requires_grad=True); b = torch.randn(co, requires_grad=True)
print("max abs diff", (upconv(x, w, b) - ref(x, w, b)).abs().max().item())
xg = x.clone().requires_grad_(True)
ga = torch.autograd.grad(upconv(xg, w, b).square().sum(), [xg, w, b]); gb = torch.autograd.grad(ref(xg, w, b).square().sum(), [xg, w, b])
print("grad rel diff", [((p - q).norm() / q.norm()).item() for p, q in zip(ga, gb)])
for dt in [torch.float32, torch.bfloat16]:
    for name, fn in [("ref", ref), ("upconv", upconv)]:
        xx = x.to(dt).requires_grad_(True)
        out = fn(xx, w, b); g = torch.randn_like(out)
        ts = []
        for _ in range(4):
            t = time.perf_counter(); fn(xx, w, b).backward(g); ts.append(time.perf_counter() - t)
        print(dt, name, f"{np.median(ts)*1000:.1f} ms fwd+bwd")
