"""One typed config tree, named presets and dotted overrides.

Defaults follow the newest official DreamerV3 code (see ``shared/RECIPE.md`` in the project notes),
at the smallest official model size so that the built-in default runs on a laptop CPU. Deviations
live in named presets in ``presets.yaml``, applied left to right, then ``key=value`` overrides.

Example:
    >>> cfg = make_config(["debug"], ["train.batch_size=4"])
    >>> cfg.train.batch_size
    4
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

from reverie.errors import ReverieError


class ConfigError(ReverieError):
    """A config key or value is wrong; the message names the fix."""


@dataclass
class EnvConfig:
    """Which environment to run and how to wrap it."""

    id: str = "CartPole-v1"
    """Gymnasium id (``gym:`` prefix optional) or a Reverie suite id such as ``crafter``."""
    num_envs: int = 1
    """Environments stepped in parallel (worker processes when > 1)."""
    parallel: bool = True
    """Run envs in worker processes when ``num_envs > 1`` (crashed workers are restarted)."""
    action_repeat: int = 1
    """Repeat each action this many env steps (rewards summed)."""
    time_limit: int = 0
    """Truncate episodes after this many agent steps (0: the env's own limit)."""
    image_size: int = 64
    """Side of square image observations after resizing."""
    pixels: bool = False
    """Replace vector observations of Gymnasium envs by rendered 64x64 frames."""


@dataclass
class ModelConfig:
    """World model (RSSM, encoders, decoders, heads) sizes and losses."""

    deter: int = 512
    """Width of the deterministic GRU state (a multiple of the GRU's 8 blocks)."""
    hidden: int = 64
    """Width of the RSSM's inner layers (a multiple of 8)."""
    stoch: int = 32
    """Number of categorical latent variables."""
    classes: int = 4
    """Classes per categorical latent."""
    unimix: float = 0.01
    """Share of uniform mixed into the latent categoricals."""
    free_nats: float = 1.0
    """KL values below this (summed over latents) are not penalised."""
    units: int = 64
    """Width of MLPs (encoder, decoder, heads)."""
    layers: int = 3
    """Hidden layers of the vector encoder and decoder MLPs."""
    cnn_depth: int = 4
    """Channels of the first conv stage; later stages use multipliers 2, 3, 4, 4."""
    cnn_stride: bool = False
    """Strided convs (k4, s2) instead of conv(k5) + max-pool: DreamerV2's layout, ~3x cheaper on a CPU."""
    cnn_layout: Literal["dreamerv3", "reverie0.1"] = "dreamerv3"
    """Conv encoder/decoder layout: the official one, or Reverie 0.1's (its checkpoints load with it)."""
    vector_codec: str = "mlp"
    """How vector observations are encoded and decoded: ``mlp`` (symlog MLPs) or a codec a game registers."""
    bins: int = 255
    """Two-hot bins for reward and value."""
    loss_dyn: float = 1.0
    """Scale of KL(sg(post) || prior)."""
    loss_rep: float = 0.1
    """Scale of KL(post || sg(prior))."""
    ensemble: int = 0
    """One-step latent predictors whose disagreement measures the model's uncertainty (0: none)."""
    kind: Literal["rssm", "transformer"] = "rssm"
    """The dynamics: the RSSM (DreamerV3), or a shortcut-forcing transformer (Dreamer 4, docs/transformer.md)."""
    tokens: int = 4
    """Transformer: latent tokens per frame."""
    token_dim: int = 16
    """Transformer: numbers per latent token."""
    context: int = 16
    """Transformer: earlier frames each frame attends to (the key-value cache's length)."""
    attn_blocks: int = 2
    """Transformer: attention blocks."""
    sample_steps: int = 4
    """Transformer: shortcut steps per dreamed frame (1, 2, 4, 8 or 16)."""


@dataclass
class ActorCriticConfig:
    """Policy and value learning in imagination."""

    horizon: int = 15
    """Imagined steps per rollout."""
    return_horizon: float = 333.0
    """Discount horizon H: gamma = 1 - 1/H."""
    lam: float = 0.95
    """Lambda of the lambda-returns."""
    entropy: float = 3e-4
    """Entropy bonus scale."""
    repval: float = 0.3
    """Scale of the replay-value loss (critic on replayed real sequences)."""
    actor_grad: Literal["reinforce", "dynamics"] = "reinforce"
    """Policy gradient: REINFORCE (newest DreamerV3) or backprop through the model."""
    objective: Literal["dreamer", "pmpo"] = "dreamer"
    """Actor objective: DreamerV3's normalised advantages, or PMPO's sign-of-advantage split (Dreamer 4)."""
    prior_kl: float = 0.0
    """Scale of the reverse KL(policy || frozen behaviour-cloning prior); used once a prior exists."""
    input: Literal["feat", "obs", "feat+obs"] = "feat"
    """What the policy heads read: the model state, the observation alone (the model as its simulator), or both."""
    cnn_depth: int = 0
    """Channels of the first conv stage of a policy head's own image encoder (``input`` with obs); 0: model's."""
    units: int = 64
    """Width of actor and critic MLPs."""
    layers: int = 3
    """Hidden layers of actor and critic MLPs."""


@dataclass
class OptimConfig:
    """Optimiser shared by world model, actor and critic."""

    name: Literal["laprop", "adam"] = "laprop"
    """LaProp (newest DreamerV3) or Adam (2023 paper)."""
    lr: float = 4e-5
    """Learning rate of all modules (model_lr/actor_lr override when > 0)."""
    model_lr: float = 0.0
    """World-model learning rate; 0 means ``lr``."""
    actor_lr: float = 0.0
    """Actor and critic learning rate; 0 means ``lr``."""
    eps: float = 1e-20
    """Optimiser epsilon."""
    agc: float = 0.3
    """Adaptive gradient clipping ratio (0: off)."""
    clip_norm: float = 0.0
    """Global-norm clipping (0: off; the 2023 paper used 1000 / 100)."""
    warmup: int = 1000
    """Linear learning-rate warm-up in updates."""


@dataclass
class TrainConfig:
    """The training loop."""

    steps: int = 30_000
    """Environment steps to train for (agent steps times action repeat)."""
    batch_size: int = 16
    """Sequences per batch."""
    batch_length: int = 64
    """Steps per sequence."""
    train_ratio: float = 32.0
    """Replayed steps per environment step."""
    prefill: int = 1024
    """Random-policy env steps collected before the first update."""
    replay_size: int = 1_000_000
    """Replay capacity in steps."""
    replay_chunk: int = 1024
    """Steps per replay file on disk."""
    recent_frac: float = 0.5
    """Share of each batch drawn from the newest quarter of the replay (online queue); 0 = uniform."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Autocast precision (weights stay fp32); auto: what measured faster, bf16 updates on AMX CPUs, else fp32."""
    device: str = "auto"
    """Torch device (``auto``: cuda when present, else cpu)."""
    threads: int = 0
    """Torch intra-op threads (0: leave torch's default)."""
    seed: int = 0
    """Random seed for torch, numpy and the envs."""
    compile: bool = True
    """torch.compile updates, acting and dream steps; the first update compiles for minutes (seconds once cached)."""


@dataclass
class RunConfig:
    """Where and how often to log, evaluate and save."""

    logdir: str = "runs/default"
    """Run directory (config, checkpoints, replay, logs)."""
    log_every: int = 1000
    """Steps between metric writes (env steps online, updates offline)."""
    save_every: int = 5000
    """Steps between checkpoints (env steps online, updates offline)."""
    eval_every: int = 5000
    """Steps between evaluations in the real env (env steps online, updates offline; 0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (0: no evaluation, periodic or final)."""
    promise_every: int = 0
    """Evaluations compare the return the model predicts over ``ac.horizon`` steps with the real one every N steps."""
    video_every: int = 20_000
    """Env steps between open-loop prediction videos (truth / model / error) for image tasks (0: off)."""
    tensorboard: bool = True
    """Write TensorBoard event files."""
    progress: bool = True
    """Show a progress bar in the terminal."""
    max_minutes: float = 0.0
    """End training after this much wall-clock time, then evaluate and save (0: no limit)."""
    stop_at_return: float = float("inf")
    """End training early once an evaluation's mean return reaches this (inf: never)."""


@dataclass
class OfflineConfig:
    """Learning from a recorded dataset (``Dreamer.fit`` / ``reverie train-offline``)."""

    steps: int = 5000
    """Gradient updates in all (world model + behaviour cloning first, then imagination RL)."""
    rl_frac: float = 0.3
    """Share of the updates spent on RL in imagination, with the world model frozen (0: BC only)."""
    bc_frac: float = 0.0
    """Share of the updates, between the model phase and RL, that train only the BC head on the frozen model."""
    bc_return_temp: float = 0.0
    """Return-weighted BC: weight labelled steps by exp((recorded return - its mean) / this), reward units (0: off)."""
    bc_return_discount: float = 0.9
    """``bc_return_temp``: discount of the recorded return-to-go that weights each step (0.9: about 10 steps)."""
    bc_return_min_reward: float = 0.0
    """``bc_return_temp``: rewards smaller in magnitude count as 0 in that return (Crafter: 0.5 keeps achievements)."""
    bc_ema: float = 0.0
    """Decay of a moving average of the BC head's weights (0: off); RL starts from it and ``head="bc"`` plays it."""
    imag_starts: int = 256
    """Replayed states that start imagined rollouts in the RL phase (sampled from the batch's B*T)."""
    pessimism: Literal["none", "cut"] = "none"
    """``cut``: an imagined rollout ends after a transition the ensemble does not know (needs model.ensemble > 1)."""
    data_prior_kl: float = 0.0
    """Scale of KL(actor || BC prior) on the replayed real states and observations, beside the imagined one."""


@dataclass
class Config:
    """The whole tree. Sections are handed to the modules that read them."""

    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ac: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        cfg = cls()
        for key, value in _flatten(data).items():
            set_key(cfg, key, value)
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def all_keys(cfg: Config | None = None) -> list[str]:
    """Every dotted key of the tree, e.g. ``train.batch_size``."""
    return list(_flatten((cfg or Config()).to_dict()).keys())


def field_docs() -> dict[str, str]:
    """Dotted key -> one-line docstring, read from the attribute docstrings in this file."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(__import__(__name__, fromlist=["_"])))
    section_of = {f.type: f.name for f in dataclasses.fields(Config)}  # type: ignore[misc]
    docs: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in section_of:
            continue
        body = node.body
        for a, b in zip(body, body[1:], strict=False):
            if not (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)):
                continue
            if isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[f"{section_of[node.name]}.{a.target.id}"] = str(b.value.value)
    return docs


def _coerce(key: str, current: Any, value: Any, hint: Any) -> Any:
    """Convert ``value`` (often a string from the command line) to the type of the field."""
    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse {value!r} ({err}).") from None
    choices = getattr(hint, "__args__", None) if "Literal" in str(hint) else None
    if choices:
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {list(choices)}.")
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} takes true or false, got {value!r}.")
        return value
    if isinstance(current, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} takes an integer, got {value!r}.")
        return value
    if isinstance(current, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} takes a number, got {value!r}.")
        return float(value)
    if isinstance(current, str):
        return str(value)
    return value


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key, checking that it exists and converting the value to the field's type."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in {f.name for f in dataclasses.fields(cfg)}:
        _unknown(key)
    section = getattr(cfg, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    if parts[1] not in fields:
        _unknown(key)
    hints = _section_hints(type(section))
    setattr(section, parts[1], _coerce(key, getattr(section, parts[1]), value, hints[parts[1]]))


def _section_hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _unknown(key: str) -> None:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else " Run `reverie train --help` for all keys."
    raise ConfigError(f"Unknown config key '{key}'.{hint}")


def load_presets() -> dict[str, dict[str, Any]]:
    """The named presets shipped in ``presets.yaml``."""
    text = resources.files("reverie").joinpath("presets.yaml").read_text()
    presets = yaml.safe_load(text)
    assert isinstance(presets, dict)
    return presets


def make_config(presets: list[str] | tuple[str, ...] = (), overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then each named preset left to right, then ``key=value`` overrides.

    Args:
        presets: preset names from ``presets.yaml`` (e.g. ``["crafter", "size12m"]``).
        overrides: strings ``section.key=value``; values are parsed as YAML scalars.

    Raises:
        ConfigError: unknown preset, unknown key, or a value of the wrong type.
    """
    cfg = Config()
    known = load_presets()
    for name in presets:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"Unknown preset '{name}'. Known presets: {', '.join(known)}.{hint}")
        for key, value in _flatten(known[name] or {}).items():
            set_key(cfg, key, value)
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...], section: str | None = None) -> None:
    """Set each ``section.key=value`` string on ``cfg`` (see :func:`set_key`); with ``section``, only keys of
    that section are accepted. The caller validates the result."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"Override '{item}' needs the form section.key=value, e.g. train.batch_size=8.")
        if section is not None and not key.strip().startswith(f"{section}."):
            raise ConfigError(f"Only {section}.* keys can be set here, got '{item}'.")
        set_key(cfg, key.strip(), value.strip())


def validate(cfg: Config) -> None:
    """Reject values that cannot work, naming the fix."""
    from reverie.plugins import codec_names

    codecs = codec_names()
    m, ac, o, t, r, off, env = cfg.model, cfg.ac, cfg.optim, cfg.train, cfg.run, cfg.offline, cfg.env
    positive: dict[str, float] = {
        "model.deter": m.deter,
        "model.hidden": m.hidden,
        "model.stoch": m.stoch,
        "model.classes": m.classes,
        "model.units": m.units,
        "model.cnn_depth": m.cnn_depth,
        "ac.horizon": ac.horizon,
        "ac.units": ac.units,
        "train.batch_size": t.batch_size,
        "train.replay_size": t.replay_size,
        "train.replay_chunk": t.replay_chunk,
        "env.num_envs": env.num_envs,
        "env.action_repeat": env.action_repeat,
        "offline.imag_starts": off.imag_starts,
        "model.tokens": m.tokens,
        "model.token_dim": m.token_dim,
        "model.context": m.context,
        "model.attn_blocks": m.attn_blocks,
    }
    at_least_zero: dict[str, float] = {
        "model.layers": m.layers,
        "model.free_nats": m.free_nats,
        "model.loss_dyn": m.loss_dyn,
        "model.loss_rep": m.loss_rep,
        "ac.layers": ac.layers,
        "ac.entropy": ac.entropy,
        "ac.repval": ac.repval,
        "ac.prior_kl": ac.prior_kl,
        "ac.cnn_depth": ac.cnn_depth,
        "optim.model_lr": o.model_lr,
        "optim.actor_lr": o.actor_lr,
        "optim.agc": o.agc,
        "optim.clip_norm": o.clip_norm,
        "optim.warmup": o.warmup,
        "train.steps": t.steps,
        "train.prefill": t.prefill,
        "train.threads": t.threads,
        "run.log_every": r.log_every,
        "run.save_every": r.save_every,
        "run.eval_every": r.eval_every,
        "run.eval_episodes": r.eval_episodes,
        "run.promise_every": r.promise_every,
        "run.video_every": r.video_every,
        "run.max_minutes": r.max_minutes,
        "env.time_limit": env.time_limit,
        "offline.steps": off.steps,
        "offline.data_prior_kl": off.data_prior_kl,
        "offline.bc_return_temp": off.bc_return_temp,
        "offline.bc_return_min_reward": off.bc_return_min_reward,
    }
    for key, value in positive.items():
        if not value >= 1:
            raise ConfigError(f"{key} must be at least 1, got {value!r}.")
    for key, value in at_least_zero.items():
        if not value >= 0:
            raise ConfigError(f"{key} must be >= 0, got {value!r}.")
    checks = [
        (m.deter % 8 == 0, "model.deter must be a multiple of 8 (the GRU's blocks)"),
        (m.hidden % 8 == 0, "model.hidden must be a multiple of 8 (the GRU's blocks)"),
        (0 <= m.unimix < 1, "model.unimix must lie in [0, 1)"),
        (t.batch_length >= 2, "train.batch_length must be >= 2"),
        (t.replay_size >= t.batch_length, "train.replay_size must hold at least one sequence (train.batch_length)"),
        (t.train_ratio > 0, "train.train_ratio must be > 0"),
        (o.lr > 0, "optim.lr must be > 0 (a negative rate climbs the loss)"),
        (o.eps > 0, "optim.eps must be > 0"),
        (env.image_size >= 16 and env.image_size % 16 == 0, "env.image_size must be a multiple of 16 (e.g. 64)"),
        (ac.return_horizon > 1, "ac.return_horizon must be > 1"),
        (0 <= ac.lam <= 1, "ac.lam must lie in [0, 1]"),
        (0 <= t.recent_frac <= 1, "train.recent_frac must lie in [0, 1]"),
        (m.bins % 2 == 1 and m.bins >= 3, "model.bins must be odd and at least 3, so that zero is a bin"),
        (m.vector_codec in codecs, f"model.vector_codec must be one of {codecs}"),
        (0 <= off.rl_frac <= 1, "offline.rl_frac must lie in [0, 1]"),
        (
            0 <= off.bc_frac <= 1 - off.rl_frac,
            "offline.bc_frac must lie in [0, 1 - offline.rl_frac]: the model phase cannot be shorter than nothing",
        ),
        (
            m.ensemble >= 0 and m.ensemble != 1,
            "model.ensemble must be 0 (off) or at least 2: one member cannot disagree",
        ),
        (
            off.pessimism == "none" or m.ensemble > 1,
            "offline.pessimism needs an ensemble: set model.ensemble to 2 or more (e.g. 5)",
        ),
        (
            m.kind == "rssm" or m.units % 16 == 0,
            "model.units must be a multiple of 16 with model.kind=transformer (its attention heads are 16 wide)",
        ),
        (m.sample_steps in (1, 2, 4, 8, 16), "model.sample_steps must be 1, 2, 4, 8 or 16"),
        (0 <= off.bc_return_discount < 1, "offline.bc_return_discount must be in [0, 1)"),
        (0 <= off.bc_ema < 1, "offline.bc_ema must be in [0, 1) (0 turns the average off; 0.995 is typical)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message + ".")


# ---------------------------------------------------------------------------------------------------------------
# Configs written by earlier versions (checkpoints, run folders): keys that were renamed, folded or removed.

_RENAMED = {
    "offline.save_every": "run.save_every",
    "offline.log_every": "run.log_every",
    "offline.eval_every": "run.eval_every",
    "offline.eval_episodes": "run.eval_episodes",
    "offline.promise_every": "run.promise_every",
}
_GRID_SWITCHES = ("decoder_prev", "count_classes", "count_copy", "reward_change", "reward_gate")
_REMOVED = {  # key -> the value that gives today's behaviour (constants now, or options removed)
    "model.blocks": 8,
    "model.head_layers": 1,
    "model.loss_rec": 1.0,
    "model.loss_rew": 1.0,
    "model.loss_con": 1.0,
    "model.uncertainty_quantile": 0.99,
    "ac.unimix": 0.01,
    "ac.min_std": 0.1,
    "ac.max_std": 1.0,
    "ac.retnorm_rate": 0.01,
    "ac.retnorm_limit": 1.0,
    "ac.retnorm_low": 0.05,
    "ac.retnorm_high": 0.95,
    "ac.slow_rate": 0.02,
    "ac.slow_reg": 1.0,
    "ac.pmpo_alpha": 0.5,
    "ac.prior_support": 0.0,
    "optim.beta1": 0.9,
    "optim.beta2": 0.999,
    "offline.bc_scale": 1.0,
    "offline.bc_weight_max": 20.0,
    "offline.bc_shift": 0,
    "offline.label_mode": "no_action",
    "offline.rl_objective": "rollout",
    "offline.one_step_samples": None,  # read only by the removed one-step objective
    "offline.rl_critic_data": 0.0,
    "offline.reward_doubt": 0.0,
    "offline.pessimism_scale": None,  # read only by the removed penalty
}


def upgrade_config_dict(data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A config dict of an earlier version in today's keys, the dotted keys that were dropped, and among them
    ``key=value`` for those whose value asked for other behaviour than today's.

    Renamed keys move where the new key is absent (``offline.save_every`` -> ``run.save_every`` ...), the grid
    codec's five switches fold into the codec's name (all off: ``crafter_grid``; all on: ``crafter_grid_delta``),
    ``ac.obs_input`` and ``ac.feat_input`` into ``ac.input``; keys that no longer exist are dropped (constants
    now, or options the project's experiments found useless). A mix of grid switches that no codec has raises
    :class:`ConfigError`.
    """
    flat = _flatten(data)
    known = set(all_keys())
    out: dict[str, Any] = {}
    dropped: list[str] = []
    changed: list[str] = []
    if flat.get("offline.pessimism") == "penalty":
        flat["offline.pessimism"] = "none"
        changed.append("offline.pessimism=penalty")
    dropped += [f"model.{name}" for name in _GRID_SWITCHES if f"model.{name}" in flat]
    switches = [bool(flat.pop(f"model.{name}", False)) for name in _GRID_SWITCHES]
    if flat.get("model.vector_codec") == "crafter_grid" and any(switches):
        if not all(switches):
            on = [f"model.{n}" for n, v in zip(_GRID_SWITCHES, switches, strict=True) if v]
            raise ConfigError(
                f"This config uses the grid codec with only {', '.join(on)} of its switches; this version has the "
                "codec with none (crafter_grid) or all of them (crafter_grid_delta). Fit the agent again."
            )
        flat["model.vector_codec"] = "crafter_grid_delta"
    if "ac.obs_input" in flat or "ac.feat_input" in flat:
        dropped += [key for key in ("ac.obs_input", "ac.feat_input") if key in flat]
        obs, feat = bool(flat.pop("ac.obs_input", False)), bool(flat.pop("ac.feat_input", True))
        flat["ac.input"] = ("feat+obs" if feat else "obs") if obs else "feat"
    for key, value in flat.items():
        if key in _RENAMED and _RENAMED[key] not in flat:  # a config written by the older versions has both
            key = _RENAMED[key]
        if key in known:
            out[key] = value
            continue
        dropped.append(key)
        if key in _REMOVED and _REMOVED[key] is not None and value != _REMOVED[key]:
            changed.append(f"{key}={value}")
    nested: dict[str, Any] = {}
    for key, value in out.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    return nested, dropped, changed
