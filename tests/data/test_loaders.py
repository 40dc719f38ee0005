"""make_loader: in-memory and Dataset loaders agree on values, order and sharding."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from cnnkit.config import AugmentConfig
from cnnkit.data.base import TensorData, TensorLoader
from cnnkit.data.loaders import DatasetLoader, make_loader

torch.set_num_threads(1)

MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.25, 0.2)


class Items(Dataset):
    """The images of a TensorData served one by one, as a file-based dataset would."""

    def __init__(self, data: TensorData) -> None:
        self.data = data
        self.targets = data.labels.tolist()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.images[i], int(self.data.labels[i])


def _data(n: int = 37, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 5, 4), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)  # each image carries its index
    return TensorData(images, torch.arange(n) % 7)


def _kw(**over: object) -> dict:
    kw = dict(batch_size=8, mean=MEAN, std=STD, shuffle=True, seed=3, device="cpu", augment=None)
    kw.update(over)
    return kw


def _indices(loader, std0: float = STD[0], mean0: float = MEAN[0]) -> list[list[int]]:
    out = []
    for x, _ in loader:
        out.append([round(float(v) * std0 * 255 + mean0 * 255) for v in x[:, 0, 0, 0]])
    return out


def test_tensor_and_dataset_loaders_give_the_same_batches() -> None:
    data = _data()
    a = make_loader(data, **_kw())
    b = make_loader(Items(data), **_kw())
    assert isinstance(a, TensorLoader) and isinstance(b, DatasetLoader)
    assert len(a) == len(b) == 5
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        pairs = list(zip(a, b, strict=True))
        assert len(pairs) == 5
        for (xa, ya), (xb, yb) in pairs:
            assert xa.dtype == xb.dtype == torch.float32 and ya.dtype == yb.dtype == torch.int64
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # and the values are (x / 255 - mean) / std
    x, y = next(iter(make_loader(Items(data), **_kw(shuffle=False))))
    want = (data.images[:8].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(x, want, atol=1e-5) and torch.equal(y, data.labels[:8])


@pytest.mark.parametrize("kind", ["tensor", "dataset"])
def test_order_is_reproducible_per_epoch_and_differs_between_epochs(kind: str) -> None:
    data = _data()
    src = data if kind == "tensor" else Items(data)
    loader = make_loader(src, **_kw())
    loader.set_epoch(0)
    e0 = _indices(loader)
    assert _indices(loader) == e0  # same epoch again: same order
    loader.set_epoch(1)
    e1 = _indices(loader)
    assert e1 != e0 and sorted(sum(e1, [])) == sorted(sum(e0, [])) == list(range(37))
    fresh = make_loader(src, **_kw())
    fresh.set_epoch(1)
    assert _indices(fresh) == e1  # a new loader (a resumed run) sees the same epoch 1
    assert _indices(make_loader(src, **_kw(seed=4))) != e0
    assert _indices(make_loader(src, **_kw(shuffle=False))) == [list(range(i, min(i + 8, 37))) for i in range(0, 37, 8)]


def test_drop_last() -> None:
    loader = make_loader(Items(_data()), **_kw(drop_last=True))
    assert len(loader) == 4 and [len(b) for b in _indices(loader)] == [8, 8, 8, 8]


@pytest.mark.parametrize("kind", ["tensor", "dataset"])
def test_sharding_covers_each_global_batch_exactly_once(kind: str) -> None:
    data = _data(n=37)
    src = data if kind == "tensor" else Items(data)
    full = make_loader(src, **_kw())
    full.set_epoch(2)
    global_batches = _indices(full)
    ranks = []
    for rank in (0, 1):
        loader = make_loader(src, **_kw(rank=rank, world_size=2))
        loader.set_epoch(2)
        assert len(loader) == len(full)
        ranks.append(_indices(loader))
    for b, (r0, r1) in enumerate(zip(*ranks, strict=True)):
        assert sorted(r0 + r1) == sorted(global_batches[b])
        assert not set(r0) & set(r1)
    assert [len(b) for b in ranks[0]] == [4, 4, 4, 4, 4]


@pytest.mark.parametrize("kind", ["tensor", "dataset"])
def test_empty_rank_slice_of_the_last_batch(kind: str) -> None:
    # 9 items, batch 8 over 2 ranks: the last global batch has one item, rank 0 gets it, rank 1 none,
    # but both ranks take the same number of steps.
    data = _data(n=9)
    src = data if kind == "tensor" else Items(data)
    shapes = [[tuple(x.shape) for x, _ in make_loader(src, **_kw(rank=r, world_size=2))] for r in (0, 1)]
    assert shapes[0] == [(4, 3, 5, 4), (1, 3, 5, 4)] and shapes[1] == [(4, 3, 5, 4), (0, 3, 5, 4)]


def test_dataset_augmentation_is_seeded_per_epoch_and_index() -> None:
    data = _data(n=12)
    aug = AugmentConfig(crop_padding=1, hflip=True)
    loader = make_loader(Items(data), **_kw(augment=aug, shuffle=False))
    ref = make_loader(Items(data), **_kw(shuffle=False))
    a = torch.cat([x for x, _ in loader])
    assert torch.equal(a, torch.cat([x for x, _ in loader]))  # same epoch: same augmentation
    assert not torch.equal(a, torch.cat([x for x, _ in ref]))  # it does change the images
    loader.set_epoch(1)
    assert not torch.equal(a, torch.cat([x for x, _ in loader]))
    two = make_loader(Items(data), **_kw(augment=aug, shuffle=False, num_workers=1))
    assert torch.equal(a, torch.cat([x for x, _ in two]))  # independent of worker processes


def test_tensor_loader_augments_and_channels_last() -> None:
    data = _data(n=16)
    loader = make_loader(data, **_kw(augment=AugmentConfig(hflip=True), channels_last=True))
    assert loader.augment is not None
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(make_loader(Items(data), **_kw(channels_last=True))))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_bad_items_and_arguments() -> None:
    class Floats(Items):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.data.images[i].float(), 0

    with pytest.raises(TypeError, match="uint8"):
        next(iter(make_loader(Floats(_data()), **_kw())))
    with pytest.raises(ValueError, match="rank"):
        make_loader(_data(), **_kw(rank=2, world_size=2))


@pytest.mark.parametrize("kind", ["tensor", "dataset"])
def test_epoch_repeats_pass_over_every_item_r_times(kind: str) -> None:
    # data.epoch_repeats: an epoch of R passes, each a fresh permutation; R = 1 is the plain order.
    from cnnkit.data.base import epoch_order

    data = _data(n=13)
    src = data if kind == "tensor" else Items(data)
    plain, three = make_loader(src, **_kw()), make_loader(src, **_kw(repeats=3))
    assert len(plain) == 2 and len(three) == 5  # ceil(39 / 8)
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        three.set_epoch(epoch)
        flat = [i for b in _indices(three) for i in b]
        passes = [flat[k * 13:(k + 1) * 13] for k in range(3)]
        assert all(sorted(p) == list(range(13)) for p in passes)
        assert len({tuple(p) for p in passes}) == 3  # each pass reshuffled
        # Pass k is the order epoch * 3 + k would have; a plain epoch is unchanged by the option.
        g = torch.Generator().manual_seed(3 * 1_000_003 + epoch * 3 + 1)
        assert passes[1] == torch.randperm(13, generator=g).tolist()
        assert [i for b in _indices(plain) for i in b] == epoch_order(13, shuffle=True, seed=3, epoch=epoch).tolist()
        g = torch.Generator().manual_seed(3 * 1_000_003 + epoch)
        assert epoch_order(13, shuffle=True, seed=3, epoch=epoch).tolist() == torch.randperm(13, generator=g).tolist()


def test_epoch_repeats_agree_across_loaders_and_ranks_and_augment_each_pass_anew() -> None:
    data = _data(n=10)
    a, b = make_loader(data, **_kw(repeats=2)), make_loader(Items(data), **_kw(repeats=2))
    a.set_epoch(4)
    b.set_epoch(4)
    assert _indices(a) == _indices(b)
    for rank in (0, 1):  # sharding cuts the same global batches
        r = make_loader(Items(data), **_kw(repeats=2, rank=rank, world_size=2))
        r.set_epoch(4)
        assert all(set(x) <= set(g) for x, g in zip(_indices(r), _indices(b), strict=True))
    # Per-sample augmentation is keyed by (epoch * R + pass, index): the two passes over an image differ.
    aug = make_loader(Items(data), **_kw(repeats=2, shuffle=False, augment=AugmentConfig(crop_padding=2,
                                                                                         hflip=True)))
    x = torch.cat([x for x, _ in aug])
    assert x.shape[0] == 20 and not torch.equal(x[:10], x[10:])
    with pytest.raises(ValueError, match="repeats"):
        make_loader(data, **_kw(repeats=0))
