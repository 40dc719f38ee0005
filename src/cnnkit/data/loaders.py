"""One entry point for batches: :func:`make_loader`.

In-memory data (:class:`~cnnkit.data.base.TensorData`) goes through a
:class:`~cnnkit.data.base.TensorLoader` on the device with batched augmentation;
file-based torch Datasets (items ``(uint8 tensor (C, H, W), int label)``) go
through a :class:`DatasetLoader` around ``torch.utils.data.DataLoader`` with
per-sample v2 transforms in the workers. Both yield ``(x, y)`` with ``x`` float,
normalised as ``(x / 255 - mean) / std`` on the device, and both order epoch
``e`` from ``(seed, e)`` alone, cutting the same global batches and sharding
them over ranks the same way.

Example::

    loader = make_loader(bundle.train, batch_size=128, mean=bundle.mean, std=bundle.std,
                         shuffle=True, seed=0, device="cuda", augment=cfg.augment)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader: ...
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnkit.config import AugmentConfig
from cnnkit.data.augment import make_batch_augment, make_transforms
from cnnkit.data.base import TensorData, TensorLoader, epoch_order

__all__ = ["DatasetLoader", "make_loader", "epoch_order", "rank_batches"]


def rank_batches(order: torch.Tensor, batch_size: int, *, drop_last: bool, rank: int = 0,
                 world_size: int = 1) -> list[torch.Tensor]:
    """Cut ``order`` into global batches of ``batch_size``; each rank keeps its slice of every batch.

    Rank ``r`` takes items ``[r * per, (r + 1) * per)`` of a batch with
    ``per = batch_size // world_size``; the last rank also takes the remainder, so
    every index of a global batch goes to exactly one rank (as TensorLoader does).
    """
    n = len(order)
    nb = n // batch_size if drop_last else -(-n // batch_size)
    out = []
    per = batch_size // world_size
    for b in range(nb):
        chunk = order[b * batch_size:(b + 1) * batch_size]
        if world_size > 1:
            lo = min(rank * per, len(chunk))
            hi = len(chunk) if rank == world_size - 1 else min(lo + per, len(chunk))
            chunk = chunk[lo:hi]
        out.append(chunk)
    return out


class _EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batch sampler yielding this rank's ``[(index, epoch), ...]`` for every global batch.

    The epoch travels with each index so that per-sample augmentation in the
    dataset is seeded by ``(seed, epoch, index)``, also in persistent workers.
    With ``repeats`` R, pass ``k`` of epoch ``e`` travels as ``e * R + k``, so
    each pass over an item draws its own augmentation.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool,
                 rank: int, world_size: int, repeats: int = 1, lengths: torch.Tensor | None = None,
                 bucket_batches: int = 32) -> None:
        self.n, self.batch_size, self.repeats = n, batch_size, repeats
        self.lengths, self.bucket_batches = lengths, bucket_batches
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        n = self.n * self.repeats
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        r = self.repeats
        order = epoch_order(self.n, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, repeats=r)
        if self.lengths is not None:
            order = self._bucketed(order)
        # Position j of the order is in pass j // n; its key epoch is epoch * r + pass (r = 1: the epoch).
        key = self.epoch * r + torch.arange(len(order)) // max(self.n, 1)
        for pos in rank_batches(torch.arange(len(order)), self.batch_size, drop_last=self.drop_last,
                                rank=self.rank, world_size=self.world_size):
            yield list(zip(order[pos].tolist(), key[pos].tolist()))

    def _bucketed(self, order: torch.Tensor) -> torch.Tensor:
        """``order`` with items of similar length in the same batches (text): cut into buckets of
        ``bucket_batches`` batches, sorted by length within each (stably), then the batches shuffled
        (seeded by the epoch, as the order is)."""
        size = self.batch_size * self.bucket_batches
        parts = []
        for b in range(0, len(order), size):
            chunk = order[b:b + size]
            parts.append(chunk[torch.sort(self.lengths[chunk], stable=True).indices])
        order = torch.cat(parts) if parts else order
        batches = list(torch.split(order, self.batch_size))
        short = bool(batches) and len(batches[-1]) < self.batch_size
        body = batches[:-1] if short else batches
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7_919)
        # The short batch stays last, where drop_last and the DDP split expect it.
        full = [body[i] for i in torch.randperm(len(body), generator=g).tolist()] + (batches[-1:] if short else [])
        return torch.cat(full) if full else order


class _Items(Dataset):
    """``ds`` indexed by ``(index, epoch)``, then ``transform``; both run under a torch seed from
    ``(seed, epoch, index)``, so random crops inside ``ds`` (ImageNet's) and the augmentation are
    reproducible and do not depend on the number of workers."""

    def __init__(self, ds: Dataset, transform: Any | None, seed: int, images: bool = True) -> None:
        self.ds, self.transform, self.seed, self.images = ds, transform, seed, images

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, Any]:
        index, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_033 + index) % (1 << 63))
            # A dataset whose items depend on the epoch (detection's mosaic, off for the last epochs)
            # takes the key: the epoch, or epoch * repeats + pass with data.epoch_repeats.
            at_epoch = getattr(self.ds, "item_at_epoch", None)
            x, y = at_epoch(index, epoch) if at_epoch is not None else self.ds[index]
            if not self.images:  # sequences, clips, structured targets: the task's collate takes them as they are
                # A task's transform sees the pair, as torchvision's v2 transforms do: boxes follow the image.
                return self.transform(x, y) if self.transform is not None else (x, y)
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 3:
                raise TypeError(f"dataset {type(self.ds).__name__} item {index} must be (uint8 tensor (C, H, W), "
                                f"label), got {type(x).__name__} {getattr(x, 'dtype', '')} "
                                f"{tuple(getattr(x, 'shape', ()))}")
            if self.transform is not None:
                x = self.transform(x)
        return x, int(y)


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors anywhere inside lists, tuples and dicts, moved to ``device`` (non-blocking)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    if not items:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


class DatasetLoader:
    """Batches of a torch Dataset of ``(uint8 (C, H, W), label)`` items, normalised on ``device``;
    or, with a ``collate`` of a task, of any items (token ids of varying length, 1-D signals, clips,
    boxes, masks): ``collate(items) -> (inputs, targets)``, moved to ``device`` as they are, with
    uint8 image batches among the inputs normalised.

    Order and sharding are those of :class:`~cnnkit.data.base.TensorLoader`: epoch
    ``e`` is a permutation from ``(seed, e)``, cut into global batches of
    ``batch_size`` of which rank ``r`` gets its slice. Items are read and
    ``transform`` (per-sample v2 transforms) applied in the workers under a torch
    seed from ``(seed, epoch, index)``, so the result does not depend on
    ``num_workers``. Uses pinned memory and non-blocking copies for CUDA, and
    persistent workers when ``num_workers > 0``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, mean: Sequence[float], std: Sequence[float], *,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 device: torch.device | str = "cpu", transform: Any | None = None, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 collate: Callable[[list[Any]], tuple[Any, Any]] | None = None, repeats: int = 1) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.dataset = dataset
        self.collate = collate
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.channels_last = channels_last
        # A dataset with bucket_lengths (text) is batched by length when shuffled for training.
        lengths = getattr(dataset, "bucket_lengths", None) if shuffle else None
        self.sampler = _EpochBatches(len(dataset), batch_size, shuffle=shuffle, seed=seed,  # type: ignore[arg-type]
                                     drop_last=drop_last, rank=rank, world_size=world_size, repeats=repeats,
                                     lengths=lengths)
        cuda = self.device.type == "cuda"
        self.loader = DataLoader(_Items(dataset, transform, seed, images=collate is None),
                                 batch_sampler=self.sampler, num_workers=num_workers,
                                 collate_fn=collate or _collate, pin_memory=cuda,
                                 persistent_workers=num_workers > 0)
        c = len(mean)
        mean_t = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        std_t = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale + shift, exactly as TensorLoader computes it
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self._shape: tuple[int, ...] | None = None

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self.collate is not None:
            for x, y in self.loader:
                x, y = to_device(x, self.device), to_device(y, self.device)
                if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 4:
                    x = torch.addcmul(self._shift, x.float(), self._scale)
                yield x, y
            return
        for x, y in self.loader:
            if x.ndim == 4:
                self._shape = tuple(x.shape[1:])
            else:  # an empty slice of the last global batch on this rank
                if self._shape is None:
                    self._shape = tuple(self.dataset[0][0].shape)
                x = x.reshape(0, *self._shape)
            x = x.to(self.device, non_blocking=True).float()
            y = y.to(self.device, non_blocking=True)
            x = torch.addcmul(self._shift, x, self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def make_loader(data: TensorData | Dataset, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                shuffle: bool, seed: int, device: torch.device | str, augment: AugmentConfig | None,
                num_workers: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                channels_last: bool = False, collate: Callable[[list[Any]], tuple[Any, Any]] | None = None,
                repeats: int = 1, transform: Callable[..., Any] | None = None) -> TensorLoader | DatasetLoader:
    """A loader yielding normalised ``(x, y)`` on ``device``, with ``len()`` and ``set_epoch(e)``.

    ``TensorData`` gets a :class:`TensorLoader` (data moved to the device once,
    augmented in batches there); any other Dataset gets a :class:`DatasetLoader`.
    ``augment`` is for training splits; pass None for evaluation. ``collate`` (a task's) makes
    batches of datasets whose items are not ``(image, label)``. ``repeats`` makes an epoch that many
    passes over the data (``data.epoch_repeats``; each pass reshuffled and augmented anew). ``transform``
    (a task's, with ``collate``) replaces the one ``augment`` would make: it takes and returns an item's
    ``(input, target)`` pair.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if isinstance(data, TensorData):
        return TensorLoader(data, batch_size, mean, std, shuffle=shuffle, seed=seed, drop_last=drop_last,
                            device=device, augment=make_batch_augment(augment), rank=rank,
                            world_size=world_size, channels_last=channels_last, repeats=repeats)
    if transform is not None and collate is None:
        raise ValueError("a task's transform (of (input, target) pairs) comes with its collate")
    return DatasetLoader(data, batch_size, mean, std, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         device=device, transform=transform if transform is not None else make_transforms(augment), num_workers=num_workers,
                         rank=rank, world_size=world_size, channels_last=channels_last, collate=collate,
                         repeats=repeats)
