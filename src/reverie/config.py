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


class ConfigError(ValueError):
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
    """Width of the deterministic GRU state."""
    hidden: int = 64
    """Width of the RSSM's inner layers."""
    stoch: int = 32
    """Number of categorical latent variables."""
    classes: int = 4
    """Classes per categorical latent."""
    blocks: int = 8
    """Blocks of the block-diagonal GRU."""
    unimix: float = 0.01
    """Share of uniform mixed into latent and policy categoricals."""
    free_nats: float = 1.0
    """KL values below this (summed over latents) are not penalised."""
    units: int = 64
    """Width of MLPs (encoder, decoder, heads)."""
    layers: int = 3
    """Hidden layers of the vector encoder and decoder MLPs."""
    head_layers: int = 1
    """Hidden layers of the reward and continue heads."""
    cnn_depth: int = 4
    """Channels of the first conv stage; later stages use multipliers 2, 3, 4, 4."""
    cnn_stride: bool = False
    """Strided convs (k4, s2) instead of conv(k5) + max-pool: DreamerV2's layout, ~3x cheaper on a CPU."""
    vector_codec: Literal["mlp", "crafter_grid"] = "mlp"
    """Vector codec: symlog MLPs (squared error) or, for crafter-symbolic, map convs + per-cell categoricals."""
    decoder_prev: bool = False
    """Grid codec only: the decoder also reads the previous observation, so it predicts what changes."""
    count_classes: bool = False
    """Grid codec only: each inventory count is decoded as one of 10 classes (cross-entropy), not regressed."""
    count_copy: bool = False
    """With count_classes and decoder_prev: the previous count's class gets a learned bonus (keeping is the default)."""
    reward_change: bool = False
    """Grid codec only: the reward head also reads what changed since the previous observation (inventory, view)."""
    reward_gate: bool = False
    """With reward_change: no reward on a step that changed none of view cell counts, inventory, sleeping flag."""
    bins: int = 255
    """Two-hot bins for reward and value."""
    loss_rec: float = 1.0
    """Scale of the observation reconstruction loss."""
    loss_rew: float = 1.0
    """Scale of the reward loss."""
    loss_con: float = 1.0
    """Scale of the continue loss."""
    loss_dyn: float = 1.0
    """Scale of KL(sg(post) || prior)."""
    loss_rep: float = 0.1
    """Scale of KL(post || sg(prior))."""
    ensemble: int = 0
    """One-step latent predictors whose disagreement measures the model's uncertainty (0: none)."""
    uncertainty_quantile: float = 0.99
    """The "I don't know" threshold: this quantile of disagreement on real transitions (running estimate)."""


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
    unimix: float = 0.01
    """Uniform share mixed into the discrete policy."""
    min_std: float = 0.1
    """Minimum std of the continuous policy."""
    max_std: float = 1.0
    """Maximum std of the continuous policy."""
    retnorm_rate: float = 0.01
    """EMA rate of the return percentile range."""
    retnorm_limit: float = 1.0
    """Advantages are divided by max(limit, range)."""
    retnorm_low: float = 0.05
    """Lower percentile of the return range."""
    retnorm_high: float = 0.95
    """Upper percentile of the return range."""
    slow_rate: float = 0.02
    """EMA rate of the slow critic."""
    slow_reg: float = 1.0
    """Scale of the critic's regulariser toward the slow critic."""
    repval: float = 0.3
    """Scale of the replay-value loss (critic on replayed real sequences)."""
    actor_grad: Literal["reinforce", "dynamics"] = "reinforce"
    """Policy gradient: REINFORCE (newest DreamerV3) or backprop through the model."""
    objective: Literal["dreamer", "pmpo"] = "dreamer"
    """Actor objective: DreamerV3's normalised advantages, or PMPO's sign-of-advantage split (Dreamer 4)."""
    pmpo_alpha: float = 0.5
    """PMPO weight of the positive-advantage set (1 - alpha on the negative set)."""
    prior_kl: float = 0.0
    """Scale of the reverse KL(policy || frozen behaviour-cloning prior); used once a prior exists."""
    prior_support: float = 0.0
    """Discrete actions: the actor takes only actions the BC prior gives >= this times its top probability."""
    obs_input: bool = False
    """Policy heads also read the observation via their own encoder (the decoded one in imagination)."""
    feat_input: bool = True
    """Policy heads read the model state; false (with obs_input) gives a policy on the observation alone."""
    cnn_depth: int = 0
    """Channels of the first conv stage of a policy head's own image encoder (obs_input); 0: model.cnn_depth."""
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
    beta1: float = 0.9
    """Momentum rate."""
    beta2: float = 0.999
    """Second-moment rate."""
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
    precision: Literal["fp32", "bf16"] = "fp32"
    """Autocast precision of the forward passes."""
    device: str = "auto"
    """Torch device (``auto``: cuda when present, else cpu)."""
    threads: int = 0
    """Torch intra-op threads (0: leave torch's default)."""
    seed: int = 0
    """Random seed for torch, numpy and the envs."""
    compile: bool = False
    """``torch.compile`` the RSSM's per-step functions: fewer GPU kernel launches, compiled at first use."""


@dataclass
class RunConfig:
    """Where and how often to log, evaluate and save."""

    logdir: str = "runs/default"
    """Run directory (config, checkpoints, replay, logs)."""
    log_every: int = 1000
    """Env steps between metric writes."""
    save_every: int = 5000
    """Env steps between checkpoints."""
    eval_every: int = 5000
    """Env steps between evaluations (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
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
    bc_scale: float = 1.0
    """Scale of the behaviour-cloning loss of the policy head on labelled steps."""
    bc_return_temp: float = 0.0
    """Return-weighted BC: weight labelled steps by exp((recorded return - its mean) / this), reward units (0: off)."""
    bc_return_discount: float = 0.9
    """``bc_return_temp``: discount of the recorded return-to-go that weights each step (0.9: about 10 steps)."""
    bc_weight_max: float = 20.0
    """``bc_return_temp``: the largest weight of one step (the loss is the weighted mean)."""
    bc_return_min_reward: float = 0.0
    """``bc_return_temp``: rewards smaller in magnitude count as 0 in that return (Crafter: 0.5 keeps achievements)."""
    bc_ema: float = 0.0
    """Decay of a moving average of the BC head's weights (0: off); RL starts from it and ``head="bc"`` plays it."""
    bc_shift: int = 0
    """Random-shift augmentation: images the BC head learns from move by up to this many pixels (0: off)."""
    label_mode: Literal["no_action", "inverse_dynamics"] = "no_action"
    """Unlabelled steps: a learned no-action input, or actions inferred by an inverse-dynamics model."""
    imag_starts: int = 256
    """Replayed states that start imagined rollouts in the RL phase (sampled from the batch's B*T)."""
    pessimism: Literal["none", "penalty", "cut"] = "none"
    """Ensemble disagreement in imagination (needs model.ensemble > 1): subtract from rewards, or cut above it."""
    pessimism_scale: float = 1.0
    """Penalty per unit of disagreement (pessimism=penalty)."""
    data_prior_kl: float = 0.0
    """Scale of KL(actor || BC prior) on the replayed real states and observations, beside the imagined one."""
    rl_objective: Literal["rollout", "one_step"] = "rollout"
    """RL: ``rollout`` (``ac.horizon`` steps) or ``one_step`` (every action, actor to prior * exp(Q / prior_kl))."""
    one_step_samples: int = 2
    """``rl_objective=one_step``: latent draws per action whose rewards are averaged into ``Q``."""
    rl_critic_data: float = 0.0
    """Scale of the critic's loss on the recorded returns during RL, beside the imagined ones (0: imagined only)."""
    reward_doubt: float = 0.0
    """Imagined reward minus this times the ensemble's reward disagreement (std across members; 0: off)."""
    save_every: int = 500
    """Updates between checkpoints."""
    log_every: int = 100
    """Updates between metric writes."""
    eval_every: int = 0
    """Updates between evaluations in the real env (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes of the final evaluation."""
    promise_every: int = 25
    """Evaluation: every this many steps, imagine ``ac.horizon`` steps and compare with what the env gave."""


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
    checks = [
        (cfg.model.deter % cfg.model.blocks == 0, "model.deter must be a multiple of model.blocks"),
        (cfg.model.hidden % cfg.model.blocks == 0, "model.hidden must be a multiple of model.blocks"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.batch_length >= 2, "train.batch_length must be >= 2"),
        (cfg.train.train_ratio > 0, "train.train_ratio must be > 0"),
        (cfg.env.num_envs >= 1, "env.num_envs must be >= 1"),
        (cfg.env.action_repeat >= 1, "env.action_repeat must be >= 1"),
        (cfg.ac.return_horizon > 1, "ac.return_horizon must be > 1"),
        (0 <= cfg.train.recent_frac <= 1, "train.recent_frac must lie in [0, 1]"),
        (cfg.model.bins % 2 == 1, "model.bins must be odd so that zero is a bin"),
        (0 <= cfg.offline.rl_frac <= 1, "offline.rl_frac must lie in [0, 1]"),
        (
            0 <= cfg.offline.bc_frac <= 1 - cfg.offline.rl_frac,
            "offline.bc_frac must lie in [0, 1 - offline.rl_frac]: the model phase cannot be shorter than nothing",
        ),
        (0 < cfg.model.uncertainty_quantile < 1, "model.uncertainty_quantile must lie in (0, 1)"),
        (cfg.model.ensemble != 1, "model.ensemble must be 0 (off) or at least 2: one member cannot disagree"),
        (
            cfg.offline.pessimism == "none" or cfg.model.ensemble > 1,
            "offline.pessimism needs an ensemble: set model.ensemble to 2 or more (e.g. 5)",
        ),
        (cfg.offline.reward_doubt >= 0, "offline.reward_doubt must be >= 0 (0 turns it off)"),
        (cfg.offline.data_prior_kl >= 0, "offline.data_prior_kl must be >= 0 (0 turns it off)"),
        (cfg.offline.one_step_samples >= 1, "offline.one_step_samples must be >= 1"),
        (cfg.offline.bc_return_temp >= 0, "offline.bc_return_temp must be >= 0 (0 turns it off)"),
        (0 <= cfg.offline.bc_return_discount < 1, "offline.bc_return_discount must be in [0, 1)"),
        (cfg.offline.bc_weight_max >= 1, "offline.bc_weight_max must be >= 1"),
        (0 <= cfg.offline.bc_ema < 1, "offline.bc_ema must be in [0, 1) (0 turns the average off; 0.995 is typical)"),
        (cfg.offline.bc_shift >= 0, "offline.bc_shift must be >= 0 pixels (0 turns the augmentation off)"),
        (cfg.ac.cnn_depth >= 0, "ac.cnn_depth must be >= 0 channels (0: the model's model.cnn_depth)"),
        (cfg.offline.bc_return_min_reward >= 0, "offline.bc_return_min_reward must be >= 0 (0: every reward counts)"),
        (
            cfg.offline.rl_objective == "rollout" or cfg.ac.prior_kl > 0,
            "offline.rl_objective=one_step needs ac.prior_kl > 0: the temperature of prior * exp(Q / ac.prior_kl)",
        ),
        (cfg.offline.rl_critic_data >= 0, "offline.rl_critic_data must be >= 0 (0 turns it off; e.g. 1.0)"),
        (0 <= cfg.ac.prior_support < 1, "ac.prior_support must lie in [0, 1) (0 turns it off; e.g. 0.1)"),
        (
            cfg.ac.feat_input or cfg.ac.obs_input,
            "ac.feat_input=false leaves the policy no input: set ac.obs_input=true as well (a policy on observations)",
        ),
        (
            cfg.offline.reward_doubt == 0 or cfg.model.ensemble > 1,
            "offline.reward_doubt needs an ensemble: set model.ensemble to 2 or more (e.g. 5)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message + ".")
