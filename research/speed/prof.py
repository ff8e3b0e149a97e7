import os, sys, time
import reverie  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import numpy as np, torch
def random_batch(space, actions, B, T):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (B, T, 64, 64, 3), dtype=np.uint8), "action": rng.integers(0, actions, (B, T)),
            "reward": rng.normal(size=(B, T)).astype(np.float32), "is_first": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}
from reverie.config import make_config
from reverie.envs.base import Space
from reverie.learner import Learner
size, prec = sys.argv[1], sys.argv[2]
torch.set_num_threads(int(os.environ.get("THREADS", 2)))
cfg = make_config([size], [f"train.precision={prec}", "train.device=cpu"])
space = {"image": Space(np.uint8, (64, 64, 3), 0, 255)}
L = Learner(cfg, space, Space(np.int64, (), 0, 17))
batch = random_batch(space, 17, cfg.train.batch_size, cfg.train.batch_length)
for i in range(2): L.update(batch, "online")
ts = []
for i in range(int(os.environ.get("REPS", 3))):
    t = time.perf_counter(); L.update(batch, "online"); ts.append(time.perf_counter() - t)
print(size, prec, "s/update", np.median(ts), ts)
if os.environ.get("PROFILE"):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as p:
        L.update(batch, "online")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
