"""Does the model see the real env's failures coming? Real CartPole episodes (the checkpoint's actor, sampled, and
random play) with the model predicting every step beside them (``reverie.correction.watch``): AUROC of the
ensemble's disagreement and of 1 - the continuation head's output for the steps where the real episode ended.

    python research/dream_failure_auroc.py [RUN]      # a run with model.ensemble > 1

Finding: research/notes/dream_transfer.md.
"""

import sys

import numpy as np
import torch

from reverie.agent import Dreamer
from reverie.correction import auroc, watch

torch.set_num_threads(1)
run = sys.argv[1] if len(sys.argv) > 1 else "research/runs/cartpole-ens-17k"
agent = Dreamer.load(run)
results, checks, _, _ = watch(agent, episodes=20, seed=0)
ended = np.array([c.real_cont == 0.0 for c in checks])
doubt = np.array([c.uncertainty for c in checks])
cont = np.array([c.predicted_cont for c in checks])
print(f"{run}: {len(checks)} real steps, {int(ended.sum())} where the game ended")
print(f"AUROC, ensemble disagreement: {auroc(doubt, ended):.3f}; 1 - continuation head: {auroc(1 - cont, ended):.3f}")
print(f"continuation head where the game ended: median {np.median(cont[ended]):.3f}, min {cont[ended].min():.3f}; elsewhere {np.median(cont[~ended]):.3f}")
