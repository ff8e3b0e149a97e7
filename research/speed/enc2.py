import os, sys, time
pass
import numpy as np, torch
from reverie.nets import ConvEncoder, ConvDecoder
torch.set_num_threads(int(os.environ.get("THREADS", 2)))
depth, prec, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
enc = ConvEncoder(3, depth)
img = torch.randint(0, 256, (1024, 64, 64, 3), dtype=torch.uint8)
def f(img):
    return enc(img).float().sum()
if mode == "compile":
    f = torch.compile(f)
ctx = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else torch.autocast("cpu", enabled=False)
with ctx:
    t = time.perf_counter(); f(img).backward(); print("first", time.perf_counter() - t)
    ts = []
    for i in range(5):
        t = time.perf_counter(); f(img).backward(); ts.append(time.perf_counter() - t)
print(depth, prec, mode, "fwd+bwd median", np.median(ts), [round(x,3) for x in ts])
if os.environ.get("PROFILE"):
    from torch.profiler import profile
    with ctx:
        with profile() as p:
            f(img).backward()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
