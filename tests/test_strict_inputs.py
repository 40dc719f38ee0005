"""Issue 9, "inputs that slip through": numbers are never silently truncated or read from booleans,
and a one-class dataset is refused. Each case failed (trained on) before."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.config import DataConfig, load_config
from cnnkit.data import load_data
from cnnkit.errors import ConfigError, SpecError, UserError


@pytest.mark.parametrize("layer, key, value", [
    ("{conv: {out: 4, kernel: 2.5}}", "kernel", "2.5"),
    ("{conv: {out: 4, kernel: 3, stride: 1.9}}", "stride", "1.9"),
    ("{conv: {out: 4, kernel: 3, padding: 1.5}}", "padding", "1.5"),
    ("{maxpool: 2.7}", "kernel", "2.7"),
    ("{conv: {out: 4, kernel: true}}", "kernel", "True"),
    ("{conv: {out: 4, kernel: 3, groups: true}}", "groups", "True"),
])
def test_layer_numbers_are_whole_not_truncated(layer, key, value):
    with pytest.raises(SpecError, match=rf"{key} must be .*{value}"):
        load_config(None, ["model.input=null", f"model.layers=[{layer}, flatten, {{dense: 10}}]"])


@pytest.mark.parametrize("override, key", [("train.epochs=true", "train.epochs"),
                                           ("data.batch_size=false", "data.batch_size"),
                                           ("optim.lr=true", "optim.lr"),
                                           ("train.epochs=2.5", "train.epochs")])
def test_config_numbers_are_not_booleans_or_fractions(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_booleans_still_work_where_they_belong():
    assert load_config(None, ["train.deterministic=true"]).train.deterministic is True


def test_an_image_folder_with_one_class_is_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8), mode="L").save(tmp_path / "cats" / f"{i}.png")
    with pytest.raises(UserError, match="at least 2"):
        load_data(DataConfig(name="imagefolder", path=str(tmp_path), val_fraction=0.25))


def test_keeping_a_single_class_is_refused():
    with pytest.raises(UserError, match="at least 2"):
        load_data(DataConfig(name="digits", classes=[3]))
