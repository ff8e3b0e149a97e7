"""Does a continuation head fitted on the features the dream uses (the prior's, one step ahead) catch more endings
than one fitted on the posterior's? Fits copies of the checkpoint's head (Adam 1e-3, 2,000 batches of 512 replayed
steps, every fifth episode held out) on posterior features, on prior features (the deter state with a sample of the
prior) or on both, and scores each on both kinds (``refit_continuation.head_report``).

    python research/prior_vs_posterior_head.py benchmarks/runs/learning_classic/CartPole-v1/seed0-<stamp>
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refit_continuation import head_report, refit  # noqa: E402
from where_precision_goes import replay  # noqa: E402

from reverie.agent import Dreamer

torch.set_num_threads(1)
run = sys.argv[1]
wm = Dreamer.load(run).learner.wm
d = replay(wm, run, prior=True)
post_f, prior_f, end, obs, ep = d["feat"], d["prior_feat"], d["end"], d["obs"], d["episode"]
test = np.flatnonzero(ep % 5 == 0); train = np.flatnonzero(ep % 5 != 0)
heads = {"checkpoint": wm.cont_head}
for name, feats in {"post": [post_f], "prior": [prior_f], "both": [post_f, prior_f]}.items():
    heads[name] = refit(wm.cont_head, feats, end, train, 2000)
for name, h in heads.items():
    print(name, "on post", json.dumps(head_report(h, post_f, end, obs, test)))
    print(name, "on prior", json.dumps(head_report(h, prior_f, end, obs, test)), flush=True)
