"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc-per-node N -m reverie train ...`` starts N processes (ranks) with identical networks. Each rank
acts in its own envs and replays its own shard of the data; every update, each rank computes the losses on its
share of the batch (``train.batch_size / N`` sequences) and the gradients are averaged across ranks (one all-reduce
of one flat buffer) before the optimiser step, which every rank takes alike: the weights stay identical. The few
batch statistics of an update (the return normaliser's percentiles, the ensemble's disagreement quantile) are taken
over the whole batch, gathered from every rank. Gloo on CPUs, NCCL on GPUs (each rank on its ``LOCAL_RANK``).

Without ``torchrun`` (no ``WORLD_SIZE`` above 1 in the environment) every function here is a no-op for one process,
so the training code calls them unconditionally. See ``docs/distributed.md``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn

from reverie.config import ConfigError
from reverie.errors import ReverieError

log = logging.getLogger("reverie")

TIMEOUT = datetime.timedelta(minutes=30)
"""How long a rank waits for the others at one collective (a first compiled update may take minutes)."""


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        """Whether this rank writes checkpoints and logs (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.size > 1


_WORLD = World()


class RankError(ReverieError):
    """Another rank of the job failed or vanished (a collective broke off): the job stops with one line."""

    @staticmethod
    def about(err: BaseException) -> str:
        """The one line for a collective that broke off with ``err``."""
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        return (
            f"rank {_WORLD.rank}: another rank of the job stopped ({first}); the last checkpoint holds the run: "
            "start the job again with --resume."
        )


def broken_off(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because a peer went away (not a bug of this rank)."""
    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(w in text for w in ("gloo", "nccl", "connection", "peer"))


def world() -> World:
    """The job this process belongs to (one rank of one when not launched by ``torchrun``)."""
    return _WORLD


def launched_size() -> int:
    """The number of ranks ``torchrun`` started (``WORLD_SIZE``; 1 without it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun.") from None


def init(device: str = "auto") -> World:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...), once.

    The backend is NCCL when the run trains on CUDA (``train.device`` cuda or auto with a GPU), else gloo. On a
    GPU each rank takes the device ``LOCAL_RANK``. Without ``torchrun`` nothing happens.
    """
    global _WORLD
    size = launched_size()
    if size <= 1 or dist.is_initialized():
        return _WORLD
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=TIMEOUT)
    _WORLD = World(dist.get_rank(), dist.get_world_size(), local, backend)
    if not _WORLD.main:  # one terminal voice: rank 0's (the others still warn)
        logging.getLogger("reverie").setLevel(logging.WARNING)
    log.info("distributed: rank %d of %d (%s)", _WORLD.rank, _WORLD.size, backend)
    return _WORLD


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    global _WORLD
    if dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = World()


def exit_process(code: int) -> NoReturn:
    """End the ``reverie`` command's process with exit status ``code``.

    A rank that ``torchrun`` started ends without the interpreter's teardown (after flushing its output): gloo's
    worker threads may still be releasing the tensors of the job's last collective, and a thread that needs Python
    while the interpreter shuts down aborts the process (``terminate called without an active exception``), which
    would fail a job that finished its work. Every file the run writes is closed by then.
    """
    try:
        ranks = launched_size()
    except ConfigError:  # already reported by the command
        ranks = 1
    if ranks <= 1:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def refuse(command: str) -> None:
    """Raise a clear error when ``command``, which runs in one process, was launched on several ranks."""
    if launched_size() > 1:
        raise ConfigError(
            f"reverie {command} runs in one process; start it without torchrun (only train and train-offline "
            "run on several ranks)."
        )


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _WORLD.backend == "nccl" else torch.device("cpu")


def _collective(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except RuntimeError as err:  # gloo and NCCL report a vanished peer as RuntimeError (DistError)
        raise RankError(RankError.about(err)) from None


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (every rank must call it at the same point)."""
    if not _WORLD.active:
        return flag
    t = torch.tensor([int(flag)], device=_device())
    _collective(dist.all_reduce, t, dist.ReduceOp.MAX)
    return bool(t.item())


def all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank."""
    return not any_rank(not flag)


def from_main(flag: bool) -> bool:
    """Rank 0's ``flag``, on every rank."""
    if not _WORLD.active:
        return flag
    t = torch.tensor([int(flag)], device=_device())
    _collective(dist.broadcast, t, 0)
    return bool(t.item())


def barrier() -> None:
    """Wait until every rank arrives here."""
    if _WORLD.active:
        _collective(dist.barrier)


def average_gradients(grads: list[Tensor]) -> None:
    """Replace each gradient by its mean over the ranks: one all-reduce of one flat buffer.

    Every rank must pass the gradients of the same parameters in the same order (the same update phase does).
    """
    if not _WORLD.active or not grads:
        return
    count = torch.tensor([len(grads)], device=_device())
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    total = torch.cat([flat, count.float()])
    _collective(dist.all_reduce, total)
    if int(total[-1].item()) != len(grads) * _WORLD.size:
        raise RankError(f"rank {_WORLD.rank}: the ranks computed gradients of different parameters in one update.")
    flat = total[:-1].div_(_WORLD.size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def gather_rows(x: Tensor) -> Tensor:
    """``x`` of every rank, concatenated along the first axis (for batch statistics of the whole batch).

    Traceable by ``torch.compile`` (a functional collective), so it may sit inside a compiled update.
    """
    if not _WORLD.active:
        return x
    from torch.distributed import _functional_collectives as fc

    group = dist.group.WORLD
    assert group is not None, "init() joined the process group"
    return fc.all_gather_single(x.contiguous(), 0, group)


def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if not _WORLD.active:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            _collective(dist.broadcast, t.data, 0)


def gather_json(obj: Any) -> list[Any]:
    """Every rank's JSON-serialisable ``obj`` (metric sums, episode counts), in rank order, on every rank."""
    if not _WORLD.active:
        return [obj]
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=_device())
    sizes = [torch.zeros(1, dtype=torch.int64, device=_device()) for _ in range(_WORLD.size)]
    _collective(dist.all_gather, sizes, torch.tensor([len(data)], device=_device()))
    longest = max(int(n.item()) for n in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=_device())
    padded[: len(data)] = data
    parts = [torch.zeros_like(padded) for _ in range(_WORLD.size)]
    _collective(dist.all_gather, parts, padded)
    return [json.loads(bytes(p[: int(n.item())].cpu().numpy())) for p, n in zip(parts, sizes, strict=True)]


def split(total: int, what: str) -> int:
    """This rank's share of ``total`` (a batch size), which must divide evenly among the ranks."""
    if total % _WORLD.size:
        raise ConfigError(
            f"{what}={total} does not split evenly over {_WORLD.size} ranks; set it to a multiple of {_WORLD.size}."
        )
    return total // _WORLD.size


def rank_seed(seed: int) -> int:
    """``seed`` moved apart for this rank (unchanged on rank 0 and in one process): envs, replay and draws differ."""
    return seed + 1_000_003 * _WORLD.rank


def agree_to_stop(interrupt: Any) -> None:
    """After a loop whose end the ranks agreed on: if a signal reached any rank (``interrupt.requested``, a
    :class:`reverie.interrupt.StopOnSignal`), mark it on every rank, so that all save and stop alike."""
    if interrupt is not None and any_rank(bool(interrupt.requested)) and not interrupt.requested:
        interrupt.requested = "a signal to another rank"


def shard(items: Iterable[int]) -> list[int]:
    """This rank's share of ``items`` (every ``size``-th one, from ``rank``)."""
    return [i for k, i in enumerate(items) if k % _WORLD.size == _WORLD.rank]
