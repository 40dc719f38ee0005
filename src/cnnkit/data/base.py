"""Data containers and the in-memory batch loader.

Small datasets (MNIST, digits, CIFAR) are held whole as one uint8 tensor
``(N, C, H, W)``; batches are cut from it by index, augmented in batches on
the same device, and normalised there. Datasets that live in files
(``imagefolder``, ``imagenet``) are ordinary torch Datasets fed through a
DataLoader instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int, repeats: int = 1) -> torch.Tensor:
    """The order of ``n`` items in ``epoch``: a permutation from ``(seed, epoch)``.

    With ``repeats`` R > 1 an epoch is R passes over the items, pass ``k``
    ordered as epoch ``epoch * R + k`` would be, so R = 1 is exactly the plain order.
    """
    if not shuffle:
        return torch.arange(n).repeat(repeats)
    parts = []
    for k in range(repeats):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * repeats + k)
        parts.append(torch.randperm(n, generator=g))
    return parts[0] if repeats == 1 else torch.cat(parts)


@dataclass
class TensorData:
    """A whole split in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, (self.images.dtype, self.images.shape)
        assert self.labels.dtype == torch.int64 and len(self.labels) == len(self.images)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def subset(self, index: torch.Tensor | Sequence[int]) -> "TensorData":
        index = torch.as_tensor(index, dtype=torch.long)
        return TensorData(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> "TensorData":
        return TensorData(self.images.to(device), self.labels.to(device))


@dataclass
class DataBundle:
    """What a dataset gives the trainer: splits, class names, input shape, normalisation."""

    train: object  # TensorData or a torch Dataset with .targets
    val: object | None
    test: object | None
    classes: list[str]
    input_shape: tuple[int, ...]  # (C, H, W) images; (C, L) signals; (T, C, H, W) clips ...
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def channel_stats(images: torch.Tensor, max_images: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (on the 0..1 scale) of a uint8 (N, C, H, W) tensor."""
    x = images[:max_images].double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


class TensorLoader:
    """Batches of a :class:`TensorData`: shuffled per epoch, augmented, normalised.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees
    exactly the batches the uninterrupted run would have seen.

    Example::

        loader = TensorLoader(data, batch_size=64, mean=(0.13,), std=(0.31,), shuffle=True, seed=0)
        loader.set_epoch(1)
        for x, y in loader: ...
    """

    def __init__(self, data: TensorData, batch_size: int, mean: Sequence[float], std: Sequence[float], *,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 device: torch.device | str = "cpu",
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False, repeats: int = 1) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.device = torch.device(device)
        self.repeats = repeats
        self.data = data.to(self.device) if data.images.device != self.device else data
        self.batch_size = batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        c = data.images.shape[1]
        mean_t = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        std_t = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale + shift
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self.epoch = 0
        # Without augmentation the normalised images never change: keep one float copy
        # (when it is small) instead of converting every batch.
        self._normalised: torch.Tensor | None = None
        if augment is None and data.images.numel() * 4 <= self.FLOAT_CACHE_BYTES:
            self._normalised = torch.addcmul(self._shift, self.data.images.float(), self._scale)
            if channels_last:
                self._normalised = self._normalised.contiguous(memory_format=torch.channels_last)

    FLOAT_CACHE_BYTES = 1 << 30

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        order = epoch_order(len(self.data), shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
                            repeats=self.repeats)
        if self.world_size > 1:
            # Each rank takes a contiguous slice of every global batch.
            per = self.batch_size // self.world_size
            nb = len(order) // self.batch_size if self.drop_last else -(-len(order) // self.batch_size)
            parts = []
            for b in range(nb):
                chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
                lo = min(self.rank * per, len(chunk))
                hi = len(chunk) if self.rank == self.world_size - 1 else min(lo + per, len(chunk))
                parts.append(chunk[lo:hi])
            return parts  # type: ignore[return-value]
        return order

    def __len__(self) -> int:
        n = len(self.data) * self.repeats
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        if isinstance(order, list):
            batches = order
        else:
            order = order.to(self.device)
            batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches.pop()
        g = torch.Generator(device="cpu").manual_seed(self.seed * 7_919 + self.epoch) if self.augment else None
        images, labels = self.data.images, self.data.labels
        for idx in batches:
            idx = idx.to(self.device)
            if self._normalised is not None:
                yield self._normalised.index_select(0, idx), labels.index_select(0, idx)
                continue
            x = images.index_select(0, idx).float()
            if self.augment is not None:
                x = self.augment(x, g)
            x = torch.addcmul(self._shift, x, self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, labels.index_select(0, idx)
