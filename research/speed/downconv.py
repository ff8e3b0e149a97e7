import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6"); libc.mallopt(-4, 0); libc.mallopt(-1, ctypes.c_int(2**31 - 1))
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(2)
# E[a, y, p, k] = 1 when output phase a reads, through low-res offset y (-1, 0, +1) and input phase p, the 5x5 tap k
E = torch.zeros(2, 3, 2, 5)
for a in range(2):
    for k in range(5):
        r = a + k - 2
        E[a, r // 2 + 1, r % 2, k] = 1
def downconv(x, w, b):
    n, ci, h, ww = x.shape
    co = w.shape[0]
    xs = F.pixel_unshuffle(x, 2)  # (n, ci*4, h/2, w/2), channel ci*4 + p*2 + q
    w3 = torch.einsum("aypk,bxql,oikl->oabipqyx", E, E, w).reshape(co * 4, ci * 4, 3, 3)
    y = F.conv2d(xs, w3.to(x.dtype), b.repeat_interleave(4).to(x.dtype), padding=1)
    return y.unflatten(1, (co, 4)).amax(2)
def ref(x, w, b):
    return F.max_pool2d(F.conv2d(x, w.to(x.dtype), b.to(x.dtype), padding=2), 2)
ci, co, h = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = torch.randn(1024, ci, h, h).contiguous(memory_format=torch.channels_last)
w = torch.randn(co, ci, 5, 5, requires_grad=True); b = torch.randn(co, requires_grad=True)
print("max abs diff", (downconv(x, w, b) - ref(x, w, b)).abs().max().item())
xg = x.clone().requires_grad_(True)
ga = torch.autograd.grad(downconv(xg, w, b).square().sum(), [xg, w, b]); gb = torch.autograd.grad(ref(xg, w, b).square().sum(), [xg, w, b])
print("grad rel diff", [((p - q).norm() / q.norm()).item() for p, q in zip(ga, gb)])
for dt in [torch.float32, torch.bfloat16]:
    for name, fn in [("ref", ref), ("down", downconv), ("ref", ref), ("down", downconv)]:
        xx = x.to(dt).requires_grad_(True)
        out = fn(xx, w, b); g = torch.randn_like(out)
        ts = []
        for _ in range(4):
            t = time.perf_counter(); fn(xx, w, b).backward(g); ts.append(time.perf_counter() - t)
        print(dt, name, f"{np.median(ts)*1000:.1f} ms fwd+bwd")
