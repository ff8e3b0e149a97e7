import reverie, os, sys, time
import numpy as np, torch
from reverie.config import make_config
from reverie.envs.base import Space
from reverie.learner import Learner
presets = sys.argv[1].split(",")
over = sys.argv[2:]
cfg = make_config(presets, ["env.id=CartPole-v1"] + over)
space = {"vector": Space(np.float32, (4,))}
L = Learner(cfg, space, Space(np.int64, (), 0, 2, discrete=True))
rng = np.random.default_rng(0)
B, T = cfg.train.batch_size, cfg.train.batch_length
batch = {"vector": rng.normal(size=(B, T, 4)).astype(np.float32), "action": rng.integers(0, 2, (B, T)),
         "reward": np.ones((B, T), np.float32), "is_first": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}
t = time.perf_counter(); L.update(batch, "online"); first = time.perf_counter() - t
L.update(batch, "online")
ts = []
for _ in range(5):
    t = time.perf_counter(); L.update(batch, "online"); ts.append(time.perf_counter() - t)
obs = {"vector": np.zeros((1, 4), np.float32), "is_first": np.ones(1, bool)}
st = None
for _ in range(10): a, st, _ = L.policy(obs, st)
t = time.perf_counter()
for _ in range(200): a, st, _ = L.policy(obs, st)
act = (time.perf_counter() - t) / 200
print(presets, over, L.precision, f"first {first:.1f}s update {np.median(ts)*1000:.0f} ms act {act*1000:.2f} ms")
if os.environ.get("PROFILE"):
    from torch.profiler import profile
    with profile() as p:
        L.update(batch, "online")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
