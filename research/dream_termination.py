"""How lenient is a CartPole checkpoint's dream about termination? Random play in DreamEnv: how many dreamed steps
lie past the real env's limits (pole angle > 12 degrees or cart beyond 2.4, read from the dreamed observation), how
long the dream goes on after first passing them, the continuation head's output there; then the dream lengths when
termination is sampled with probability 1 - cont_pred instead of the 0.5 threshold, against real random play.

    python research/dream_termination.py [RUN ...]

Finding: research/notes/dream_transfer.md.
"""
import sys

import numpy as np, torch
torch.set_num_threads(1)
from reverie.dream import DreamEnv

RUNS = sys.argv[1:] or ["benchmarks/runs/learning_classic/CartPole-v1/seed0-1796596233", "research/runs/cartpole-ens-17k"]
for run in RUNS:
    env = DreamEnv(run, seed=0, max_steps=500)
    rng = np.random.default_rng(0)
    past, steps, ends, angles, conts = 0, 0, [], [], []
    for ep in range(30):
        obs, _ = env.reset(seed=ep)
        done = False; first_past = None; t = 0
        while not done:
            obs, r, te, tr, info = env.step(int(rng.integers(2)))
            t += 1; steps += 1
            out = abs(obs[2]) > 0.2095 or abs(obs[0]) > 2.4
            if out:
                past += 1; conts.append(info["cont_pred"])
                if first_past is None: first_past = t
            done = te or tr
        ends.append((t, first_past)); angles.append(abs(obs[2]))
    lag = [t - f for t, f in ends if f is not None]
    print(run.split('/')[-1], "steps", steps, "steps past the real limits", past, f"({past/steps:.0%})",
          "mean dream length", np.mean([t for t, _ in ends]), "steps the dream goes on past the limit (mean)", np.mean(lag) if lag else None,
          "cont_pred there (median)", np.median(conts) if conts else None, "ended without passing", sum(f is None for _, f in ends))

print("--- the head's output inside the limits, at the first dreamed step past them, and after")
env = DreamEnv(RUNS[0], seed=0, max_steps=500)
rng = np.random.default_rng(0)
first, later, inside = [], [], []
for ep in range(40):
    env.reset(seed=ep)
    done, passed = False, False
    while not done:
        obs, r, te, tr, info = env.step(int(rng.integers(2)))
        done = te or tr
        out = abs(obs[2]) > 0.2095 or abs(obs[0]) > 2.4
        (first if out and not passed else later if out else inside).append(info["cont_pred"])
        passed = passed or out
print("inside: median %.3f, 1st percentile %.3f" % (np.median(inside), np.percentile(inside, 1)))
print("first step past: median %.3f (n=%d); later: median %.3f (n=%d)" % (np.median(first), len(first), np.median(later), len(later)))

print("--- termination sampled with probability 1 - cont_pred")
import reverie.dream as D
orig = D.DreamEnv.step
def sampled(self, action):
    obs, r, te, tr, info = orig(self, action)
    te = bool(self.np_random.random() > info["cont_pred"])
    return obs, r, te, tr and not te, info
D.DreamEnv.step = sampled
for run in RUNS:
    env = DreamEnv(run, seed=0, max_steps=500)
    rng = np.random.default_rng(0)
    lens = []
    for ep in range(30):
        env.reset(seed=ep); done=False; t=0
        while not done:
            obs, r, te, tr, info = env.step(int(rng.integers(2))); t+=1; done = te or tr
        lens.append(t)
    print(run.split('/')[-1], "mean dream length (random play)", np.mean(lens))
import gymnasium
e = gymnasium.make("CartPole-v1"); L=[]
for ep in range(100):
    e.reset(seed=ep); d=False; t=0
    while not d:
        _, _, a, b, _ = e.step(int(rng.integers(2))); t+=1; d = a or b
    L.append(t)
print("real random length", np.mean(L))
