"""Crafter's symbolic vector read as what it is: a grid of one-hot cells plus a short tail.

Two codecs for the ``crafter-symbolic`` observation (layout in :mod:`reverie.crafter.env`), registered by the
Crafter plug-in as ``model.vector_codec`` values:

* ``crafter_grid`` (:class:`GridCodec`): :class:`GridEncoder` reads the ``(rows, columns, 19)`` local map with two
  3x3 convolutions (the same filters at every cell, so what is learned about a table next to the player holds
  wherever the table is), flattened and joined with the inventory/facing/daylight tail, then the usual MLP.
  :class:`GridDecoder` predicts, per cell, a categorical over the 13 materials and one over "no object" + the 6
  objects, trained by cross-entropy (a flat squared error over 1,197 mostly-zero entries barely notices a missed
  cow or table); the tail by squared error in symlog space.
* ``crafter_grid_delta`` (:class:`DeltaCodec`): the same encoder, and a decoder that also reads the previous
  observation (three 3x3 convolutions over its map, with the features broadcast to every cell, add to each cell's
  logits; its tail joins the MLP's input), so the features only carry what changed (as frame-conditioned video
  models such as DIAMOND's do); each inventory count (0-9) is a categorical over 10 classes whose previous value
  gets a learned bonus (keeping the inventory is the default); and the reward head reads :func:`change_features`
  of each step, with a zero reward wherever nothing changed (:func:`changed`). An all-zero previous vector means
  "none" (episode starts): a real one has a material in every cell.

The decoders' :meth:`GridDecoder.picture` is the sharp likeliest observation: the same kind of vector the game
gives, never a blur of probabilities a policy was not trained on.

Example:
    >>> from reverie.config import ModelConfig
    >>> cfg = ModelConfig(units=32, layers=1)
    >>> enc, dec = DeltaCodec.encoder(1219, cfg), DeltaCodec.decoder(48, 1219, cfg)
    >>> x = torch.zeros(2, 3, 1219)
    >>> enc(x).shape, dec.picture(torch.zeros(2, 3, 48)).shape
    (torch.Size([2, 3, 32]), torch.Size([2, 3, 1219]))
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.codecs import VectorCodec, VectorDecoder, VectorEncoder
from reverie.config import ModelConfig
from reverie.crafter.env import ITEMS, MATERIALS, OBJECTS, symbolic_size
from reverie.functional import symexp, symlog
from reverie.nets import MLP, ChannelNorm, Linear, init_fan_in

__all__ = [
    "CHANGE_FEATURES",
    "GRID_CHANNELS",
    "DeltaCodec",
    "GridCodec",
    "GridDecoder",
    "GridEncoder",
    "cell_materials",
    "change_features",
    "changed",
    "grid_layout",
]

GRID_CHANNELS = 32
"""Channels of the grid encoder's two convolutions."""
_MATS, _OBJS = 1 + len(MATERIALS), len(OBJECTS)  # "outside" + 12 materials; 6 objects
_CELL = _MATS + _OBJS
_MAX_COUNT = 9.0  # the symbolic vector holds inventory counts divided by this
_COUNTS = 10  # an inventory count is 0..9


def grid_layout(size: int) -> tuple[int, int]:
    """(rows, columns) of the local map in a symbolic vector of ``size`` values (crafter's default view).

    Raises:
        ValueError: ``size`` is not the default view's vector length.
    """
    if size != symbolic_size((9, 9)):
        raise ValueError(
            f"model.vector_codec=crafter_grid reads crafter-symbolic vectors of {symbolic_size((9, 9))} values "
            f"(view 9x9), got a vector of {size}; use model.vector_codec=mlp for other observations."
        )
    return 7, 9


CHANGE_FEATURES = _CELL + 2 * (len(ITEMS) + 6) + 1
"""Width of :func:`change_features`: per-class cell count change, tail change, previous tail, "has previous"."""


def change_features(obs: Tensor, prev: Tensor | None) -> Tensor:
    """What changed from ``prev`` to ``obs``, both (..., N) crafter-symbolic vectors in env units: (..., 64).

    The change in the number of view cells of each material and object (a table placed, a tree cut down, a
    cow eaten: one cell; a step shifts whole rows, mostly of grass), the change of the tail with inventory
    counts in whole items (wood +1, sapling -1, health -2), the previous tail in symlog space (what was held
    before) and a flag that there was a previous observation. Where ``prev`` is all zeros (episode starts) or
    None there was none and every feature is zero.

    Read by the reward head with the ``crafter_grid_delta`` codec: in Crafter a reward comes with a
    change of the inventory or the view (+1 for an achievement, +-0.1 per health point), which a head on
    the latent alone smears over the steps around it.
    """
    rows, cols = grid_layout(obs.shape[-1])
    cells = rows * cols * _CELL
    obs = obs.float()
    prev = torch.zeros_like(obs) if prev is None else prev.float()
    has = (prev[..., :cells].amax(-1, keepdim=True) > 0).float()  # (..., 1)
    lead = obs.shape[:-1]
    counts = obs[..., :cells].reshape(*lead, rows * cols, _CELL).sum(-2)
    before = prev[..., :cells].reshape(*lead, rows * cols, _CELL).sum(-2)
    scale = torch.ones(obs.shape[-1] - cells, device=obs.device)
    scale[: len(ITEMS)] = _MAX_COUNT  # inventory counts in whole items
    tail, prev_tail = obs[..., cells:] * scale, prev[..., cells:] * scale
    return torch.cat([(counts - before) * has, (tail - prev_tail) * has, symlog(prev_tail) * has, has], -1)


def changed(change: Tensor) -> Tensor:
    """(..., 64) :func:`change_features` -> (...,) bool: the step changed how many view cells hold some material
    or object, an inventory count (by a whole item) or whether the player sleeps. A step that does none of
    these (a craft the game ignored, a move into a wall, a ``noop``) earns nothing in Crafter: every
    achievement adds an item, changes the view or wakes the player, and health rewards come with health."""
    sleeping = _CELL + len(ITEMS) + 5  # the tail's last entry: [inventory, facing (4), daylight, sleeping]
    moved = torch.cat([change[..., : _CELL + len(ITEMS)], change[..., sleeping : sleeping + 1]], -1)
    return (moved.abs() >= 0.5).any(-1)


def cell_materials(vectors: np.ndarray) -> np.ndarray:
    """(..., N) crafter-symbolic vectors -> (..., rows * columns) material index of each cell of the local view
    (0 is "outside" the world)."""
    rows, cols = grid_layout(vectors.shape[-1])
    cells = vectors[..., : rows * cols * _CELL].reshape(*vectors.shape[:-1], rows * cols, _CELL)
    return cells[..., :_MATS].argmax(-1)


class GridEncoder(nn.Module):
    """Symbolic Crafter vector (..., N) -> embedding (..., units)."""

    def __init__(self, size: int, cfg: ModelConfig):
        super().__init__()
        self.rows, self.cols = grid_layout(size)
        self.cells = self.rows * self.cols * _CELL
        convs: list[nn.Module] = []
        inp = _CELL
        for _ in range(2):
            conv = nn.Conv2d(inp, GRID_CHANNELS, 3, padding=1, bias=False)
            init_fan_in(conv.weight, inp * 9)
            convs += [conv, ChannelNorm(GRID_CHANNELS), nn.SiLU()]
            inp = GRID_CHANNELS
        self.conv = nn.Sequential(*convs)
        self.mlp = MLP(GRID_CHANNELS * self.rows * self.cols + size - self.cells, cfg.units, cfg.layers)
        self.out_dim = self.mlp.out_dim

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).float()
        grid = x[:, : self.cells].reshape(-1, self.rows, self.cols, _CELL).permute(0, 3, 1, 2)
        maps = self.conv(grid).flatten(1)
        return self.mlp(torch.cat([maps, symlog(x[:, self.cells :])], -1)).reshape(*lead, -1)


class GridDecoder(VectorDecoder):
    """Features (..., F) -> per-cell material and object logits and the tail (see the module docstring).

    Args:
        feat_dim: width of the features.
        size: length of the symbolic vector.
        cfg: the model section (``units``, ``layers``).
        delta: the ``crafter_grid_delta`` decoder: reads the previous observation, inventory counts as classes
            with a learned bonus for keeping the previous count.
    """

    def __init__(self, feat_dim: int, size: int, cfg: ModelConfig, delta: bool = False):
        super().__init__()
        self.rows, self.cols = grid_layout(size)
        self.n_cells = self.rows * self.cols
        self.tail = size - self.n_cells * _CELL
        self.reads_prev = self.count_classes = self.count_copy = delta
        if self.count_copy:  # per inventory entry, the logit bonus of keeping the previous count (init: e^4 odds)
            self.copy_weight = nn.Parameter(torch.full((len(ITEMS),), 4.0))
        # the tail's outputs: one value per entry, or with count_classes 10 classes per inventory count
        self.tail_out = self.tail + (len(ITEMS) * (_COUNTS - 1) if self.count_classes else 0)
        self.mlp = MLP(feat_dim + (self.tail + 1 if self.reads_prev else 0), cfg.units, cfg.layers)
        self.out = Linear(self.mlp.out_dim, self.n_cells * (_MATS + 1 + _OBJS) + self.tail_out)
        if self.reads_prev:
            self.broadcast = Linear(feat_dim, GRID_CHANNELS)
            convs: list[nn.Module] = []
            inp = _CELL + 1 + GRID_CHANNELS  # previous cell, "there is a previous frame", features
            for _ in range(3):
                conv = nn.Conv2d(inp, GRID_CHANNELS, 3, padding=1, bias=False)
                init_fan_in(conv.weight, inp * 9)
                convs += [conv, ChannelNorm(GRID_CHANNELS), nn.SiLU()]
                inp = GRID_CHANNELS
            self.change = nn.Sequential(*convs, nn.Conv2d(GRID_CHANNELS, _MATS + 1 + _OBJS, 1))

    def logits(self, feat: Tensor, prev: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(materials (..., cells, 13), objects (..., cells, 7: none first), tail): the tail in symlog space
        (..., 22), or with count classes (``delta``) the inventory's count logits (..., 16 * 10) and then the
        rest of the tail in symlog space (..., 6).

        ``prev``: the previous observation (..., N) in env units, all zeros where there is none; read only
        by the ``delta`` decoder (None: none anywhere).
        """
        lead = feat.shape[:-1]
        cells = self.n_cells * _CELL
        if self.reads_prev:
            if prev is None:
                prev = torch.zeros(*lead, cells + self.tail, device=feat.device)
            prev = prev.reshape(*lead, -1).float()
            has = (prev[..., :cells].amax(-1, keepdim=True) > 0).float()  # (..., 1)
            out = self.out(self.mlp(torch.cat([feat, (symlog(prev[..., cells:]) * has).to(feat.dtype), has], -1)))
        else:
            out = self.out(self.mlp(feat))
        mats, objs, tail = out.float().split([self.n_cells * _MATS, self.n_cells * (1 + _OBJS), self.tail_out], -1)
        mats, objs = mats.reshape(*lead, self.n_cells, _MATS), objs.reshape(*lead, self.n_cells, 1 + _OBJS)
        if self.reads_prev:
            assert prev is not None
            grid = prev[..., :cells].reshape(-1, self.rows, self.cols, _CELL).permute(0, 3, 1, 2)
            n = grid.shape[0]
            flag = has.reshape(n, 1, 1, 1).expand(n, 1, self.rows, self.cols)
            wide = self.broadcast(feat.reshape(n, -1)).float()[:, :, None, None].expand(-1, -1, self.rows, self.cols)
            change = self.change(torch.cat([grid, flag, wide], 1)).float()  # (n, 20, rows, cols)
            change = change.permute(0, 2, 3, 1).reshape(*lead, self.n_cells, _MATS + 1 + _OBJS)
            mats, objs = mats + change[..., :_MATS], objs + change[..., _MATS:]
            if self.count_copy:  # the previous count's class gets a learned bonus: "unchanged" is the default
                counts, rest = self._split_counts(tail)
                before = (prev[..., cells : cells + len(ITEMS)] * _MAX_COUNT).round().long().clamp(0, _COUNTS - 1)
                bonus = F.one_hot(before, _COUNTS).float() * (self.copy_weight[:, None] * has[..., None])
                tail = torch.cat([(counts + bonus).flatten(-2), rest], -1)
        return mats, objs, tail

    def _split_counts(self, tail: Tensor) -> tuple[Tensor, Tensor]:
        """A ``count_classes`` tail -> (count logits (..., 16, 10), the rest in symlog space (..., 6))."""
        counts, rest = tail.split([len(ITEMS) * _COUNTS, self.tail - len(ITEMS)], -1)
        return counts.reshape(*counts.shape[:-1], len(ITEMS), _COUNTS), rest

    def picture(self, feat: Tensor, prev: Tensor | None = None) -> Tensor:
        """The most likely observation behind ``feat``, sharp and in env units (..., N): each cell's likeliest
        material and object one-hot, inventory counts in whole items (the likeliest count, or with regressed
        counts the nearest), facing one-hot, sleeping 0/1.
        """
        mats, objs, tail = self.logits(feat, prev)
        lead = feat.shape[:-1]
        mat = F.one_hot(mats.argmax(-1), _MATS).float()  # (..., cells, 13)
        obj = F.one_hot(objs.argmax(-1), 1 + _OBJS).float()[..., 1:]  # class 0 is "no object"
        cells = torch.cat([mat, obj], -1).reshape(*lead, -1)
        if self.count_classes:
            counts, rest = self._split_counts(tail)
            items = counts.argmax(-1).float() / _MAX_COUNT
            facing, daylight, sleeping = symexp(rest.float()).split([4, 1, 1], -1)
        else:
            items, facing, daylight, sleeping = symexp(tail.float()).split([len(ITEMS), 4, 1, 1], -1)
            items = (items.clamp(0, 1) * _MAX_COUNT).round() / _MAX_COUNT
        facing = F.one_hot(facing.argmax(-1), 4).float()
        return torch.cat([cells, items, facing, daylight.clamp(0, 1), (sleeping > 0.5).float()], -1)

    def loss(self, feat: Tensor, target: Tensor, prev: Tensor | None = None) -> Tensor:
        """Cross-entropy of each cell's material and object (and with count classes of each inventory count), plus
        the rest of the tail's squared error: (B, T)."""
        mats, objs, tail = self.logits(feat, prev)
        lead = target.shape[:-1]
        cells = target[..., : self.n_cells * _CELL].reshape(*lead, self.n_cells, _CELL).float()
        mat_class = cells[..., :_MATS].argmax(-1)
        has_obj = cells[..., _MATS:].amax(-1) > 0
        obj_class = torch.where(has_obj, cells[..., _MATS:].argmax(-1) + 1, 0)
        ce = F.cross_entropy(mats.flatten(0, -2), mat_class.flatten(), reduction="none")
        ce = ce + F.cross_entropy(objs.flatten(0, -2), obj_class.flatten(), reduction="none")
        target_tail = target[..., self.n_cells * _CELL :].float()
        total = ce.reshape(*lead, self.n_cells).sum(-1)
        if self.count_classes:
            counts, tail = self._split_counts(tail)
            items, target_tail = target_tail.split([len(ITEMS), self.tail - len(ITEMS)], -1)
            count_class = (items * _MAX_COUNT).round().long().clamp(0, _COUNTS - 1)
            ce_counts = F.cross_entropy(counts.flatten(0, -2), count_class.flatten(), reduction="none")
            total = total + ce_counts.reshape(*lead, len(ITEMS)).sum(-1)
        return total + ((tail - symlog(target_tail)) ** 2).sum(-1)


class GridCodec(VectorCodec):
    """``model.vector_codec=crafter_grid``: :class:`GridEncoder` and the plain :class:`GridDecoder`."""

    @classmethod
    def encoder(cls, size: int, cfg: ModelConfig) -> VectorEncoder:
        return GridEncoder(size, cfg)

    @classmethod
    def decoder(cls, feat_dim: int, size: int, cfg: ModelConfig) -> VectorDecoder:
        return GridDecoder(feat_dim, size, cfg)


class DeltaCodec(GridCodec):
    """``model.vector_codec=crafter_grid_delta``: the grid codec whose decoder pictures each observation from the one
    before, and whose reward head reads what changed (:func:`change_features`), gated by :func:`changed`."""

    change_dim = CHANGE_FEATURES

    @classmethod
    def decoder(cls, feat_dim: int, size: int, cfg: ModelConfig) -> VectorDecoder:
        return GridDecoder(feat_dim, size, cfg, delta=True)

    @staticmethod
    def change(now: Tensor, prev: Tensor | None) -> Tensor:
        return change_features(now, prev)

    @staticmethod
    def gate(change: Tensor) -> Tensor | None:
        return changed(change)
