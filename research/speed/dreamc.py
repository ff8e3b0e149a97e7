import reverie, sys, time, numpy as np, torch
sys.argv = ["x"]
exec(open("benchmarks/studio_fps.py").read().split("def main")[0])
from reverie import Dreamer
torch.set_num_threads(1)
cfg = make_config(["size12m"], ["env.id=crafter", "train.device=cpu", "train.threads=1", "train.precision=fp32"])
agent = Dreamer(cfg, {"image": Space(np.uint8, (64, 64, 3), 0, 255)}, Space(np.int64, (), 0, 17, discrete=True))
env = DreamEnv(agent, seed=0, real_env=False, max_steps=10**9)
env.reset()
wm = agent.learner.wm
wm.step = torch.compile(wm.step, dynamic=False)
t = time.perf_counter()
for a in range(3): env.step(a)
print("compile", time.perf_counter() - t)
t = time.perf_counter()
for a in range(200): env.step(a % 17)
print("fps", 200 / (time.perf_counter() - t))
