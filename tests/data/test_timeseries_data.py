"""The time-series data: readers (.ts, CSV/TSV, .npz/.npy), missing values, z-normalisation, padding
with a mask and resampling, the layout fitted on the training split, batch augmentations, the
``series`` dataset (stratified split) and the ``forecast`` dataset (windows in time order, train-only
scaling).

The .ts facts come from /work/shared/data/ucr/README.md (training files only: no *_TEST.ts file is
read by these tests, nor aeon's bundled copies)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.config import DataConfig
from cnnkit.data import DATASETS, list_datasets, load_data, stratified_split
from cnnkit.data.timeseries import (ForecastLayout, SeriesAugment, SeriesLayout, class_order, fill_missing,
                                    prepare_series, read_forecast_csv, read_series, to_array, znormalise)
from cnnkit.data.timeseries.dataset import stratified_indices
from cnnkit.errors import UserError

UCR = Path("/work/shared/data/ucr")


def _ucr(name: str) -> Path:
    pytest.importorskip("aeon")
    path = UCR / f"{name}_TRAIN.ts"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    return path


def _build(name: str, **kw):
    assert name in list_datasets()  # registers the datasets
    return DATASETS.get(name)(DataConfig(name=name, **kw))


# --------------------------------------------------------------------------------------------
# .ts files (UCR/UEA), against the README's facts
# --------------------------------------------------------------------------------------------


def test_ts_gunpoint_univariate_fixed_length():
    d = read_series(_ucr("GunPoint"))
    assert len(d) == 50 and d.channels == 1 and set(d.lengths) == {150}
    assert d.classes == ["1", "2"]
    assert np.bincount(d.targets).tolist() == [24, 26]
    assert all(s.dtype == np.float64 and s.shape == (1, 150) for s in d.series)
    assert [d.classes[t] for t in d.targets] == d.labels


def test_ts_japanese_vowels_multivariate_variable_length():
    d = read_series(_ucr("JapaneseVowels"))
    assert len(d) == 270 and d.channels == 12
    assert min(d.lengths) == 7 and max(d.lengths) == 26 and len(set(d.lengths)) > 2
    assert d.classes == [str(i) for i in range(1, 10)]
    assert np.bincount(d.targets).tolist() == [30] * 9


def test_ts_basic_motions_and_float_labels():
    d = read_series(_ucr("BasicMotions"))
    assert (len(d), d.channels, set(d.lengths)) == (40, 6, {100})
    assert d.classes == ["badminton", "running", "standing", "walking"]  # aeon lower-cases data lines
    assert np.bincount(d.targets).tolist() == [10] * 4
    c = read_series(_ucr("Covid3Month_disc"))
    assert c.classes == ["0.0", "1.0", "2.0"] and np.bincount(c.targets).tolist() == [29, 75, 36]


def test_ts_small_file_values_missing_and_bad_line(tmp_path):
    pytest.importorskip("aeon")
    head = "@problemName toy\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n" \
           "@equalLength false\n@classLabel true x y\n@data\n"
    good = tmp_path / "toy_TRAIN.ts"
    good.write_text(head + "1,2,3:4,5,6:x\n7,?:8,9:y\n")
    d = read_series(good)
    assert d.lengths == [3, 2] and d.channels == 2 and d.labels == ["x", "y"]
    np.testing.assert_array_equal(d.series[0], [[1, 2, 3], [4, 5, 6]])
    assert np.isnan(d.series[1][0, 1]) and d.series[1][1].tolist() == [8, 9]
    bad = tmp_path / "bad.ts"
    bad.write_text(head + "1,2,3:4,5,6:x\n1,zz,3:4,5,6:y\n")
    with pytest.raises(UserError, match=r"line 10 .*'zz'"):
        read_series(bad)


# --------------------------------------------------------------------------------------------
# CSV / TSV, npz / npy
# --------------------------------------------------------------------------------------------


def test_class_order_numeric_then_alphabetical():
    assert class_order(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert class_order(["10.0", "2.0", "0.0"]) == ["0.0", "2.0", "10.0"]
    assert class_order(["b", "a", "10", "2"]) == ["10", "2", "a", "b"]


def test_csv_round_trip_headerless_and_tsv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 9)).round(6)
    y = ["2", "10", "1", "2", "10", "1"]
    path = tmp_path / "s.csv"
    path.write_text("\n".join(",".join([lab] + [repr(float(v)) for v in row]) for lab, row in zip(y, x)) + "\n")
    d = read_series(path)
    assert d.classes == ["1", "2", "10"] and d.labels == y
    np.testing.assert_array_equal(np.stack([s[0] for s in d.series]), x)
    tsv = tmp_path / "s.tsv"
    tsv.write_text("\n".join("\t".join([lab] + [str(v) for v in row]) for lab, row in zip(y, x)))
    np.testing.assert_array_equal(np.stack([s[0] for s in read_series(tsv).series]), x)


def test_csv_header_label_column_missing_cells_and_lengths(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("t0,t1,t2,t3,kind\n1,,3,4,cat\n5,6,,,dog\n 7 ,8,9,nan,cat\n")
    d = read_series(path, label_column="kind")
    assert d.labels == ["cat", "dog", "cat"] and d.classes == ["cat", "dog"] and d.targets == [0, 1, 0]
    assert d.lengths == [4, 2, 3]  # empty cells at the end of a row end its series
    assert np.isnan(d.series[0][0, 1]) and d.series[0][0, [0, 2, 3]].tolist() == [1, 3, 4]
    assert d.series[2][0].tolist() == [7, 8, 9]
    by_index = read_series(path, label_column=4)
    assert by_index.labels == d.labels
    with pytest.raises(UserError, match=r"'knd'.*did you mean 'kind'"):
        read_series(path, label_column="knd")


def test_csv_ragged_and_bad_cells_name_the_row(tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,1,2,3\nb,1,2\na,4,5,6\n")
    with pytest.raises(UserError, match=r"row 2 has 3 cells, row 1 has 4.*\.ts"):
        read_series(ragged)
    word = tmp_path / "w.csv"
    word.write_text("a,1,2,3\nb,1,two,3\n")
    with pytest.raises(UserError, match=r"row 2, column 2: 'two' is not a number"):
        read_series(word)


def test_npz_round_trip_both_shapes(tmp_path):
    rng = np.random.default_rng(1)
    x3 = rng.normal(size=(5, 3, 7))
    y = np.array([3, 1, 2, 1, 3])
    np.savez(tmp_path / "a.npz", X=x3, y=y)
    d = read_series(tmp_path / "a.npz")
    assert d.classes == ["1", "2", "3"] and d.targets == [2, 0, 1, 0, 2]
    np.testing.assert_array_equal(np.stack(d.series), x3)
    x2 = rng.normal(size=(4, 6)).astype(np.float32)
    np.savez(tmp_path / "b.npz", X=x2, y=np.array(["no", "yes", "no", "no"]))
    e = read_series(tmp_path / "b.npz")
    assert e.channels == 1 and e.classes == ["no", "yes"]
    np.testing.assert_array_equal(np.stack(e.series)[:, 0], x2.astype(np.float64))
    np.savez(tmp_path / "c.npz", data=x2)
    with pytest.raises(UserError, match=r"no array 'X'.*'data'"):
        read_series(tmp_path / "c.npz")


def test_npy_with_sibling_labels(tmp_path):
    x = np.arange(24, dtype=np.float64).reshape(4, 2, 3)
    np.save(tmp_path / "set_TRAIN.npy", x)
    with pytest.raises(UserError, match=r"set_TRAIN_labels"):
        read_series(tmp_path / "set_TRAIN.npy")
    np.save(tmp_path / "set_TRAIN_y.npy", np.array([0.0, 1.0, 1.0, 0.0]))
    d = read_series(tmp_path / "set_TRAIN.npy")
    assert d.classes == ["0.0", "1.0"] and d.targets == [0, 1, 1, 0]
    np.testing.assert_array_equal(np.stack(d.series), x)


def test_unknown_class_in_a_test_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,1,2\nzebra,3,4\n")
    with pytest.raises(UserError, match=r"'zebra'.*\['a', 'b'\]"):
        read_series(path, classes=["a", "b"])
    assert read_series(path, classes=["zebra", "a"]).targets == [1, 0]


# --------------------------------------------------------------------------------------------
# Preparation: missing values, z-norm, one length, the layout
# --------------------------------------------------------------------------------------------


def test_fill_missing_by_hand():
    x = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan], [np.nan] * 5, [0.0, np.nan, np.nan, np.nan, 4.0]])
    out = fill_missing(x, "interpolate")
    np.testing.assert_allclose(out, [[1, 1, 2, 3, 3], [0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(fill_missing(x, "zero")[0], [0, 1, 0, 3, 0])
    with pytest.raises(UserError, match=r"series 7 .*channel 0, step 0"):
        fill_missing(x, "error", index=7)
    clean = np.ones((1, 3))
    np.testing.assert_array_equal(fill_missing(clean, "error"), clean)


def test_znormalise_by_hand():
    x = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.1, 0.1, 0.1], [10.0, 0.0, 20.0]])
    z = znormalise(x)
    s = np.sqrt(2 / 3)  # population std of 1, 2, 3
    np.testing.assert_allclose(z[0], [-1 / s, 0, 1 / s])
    np.testing.assert_array_equal(z[1], [0, 0, 0])
    np.testing.assert_array_equal(z[2], [0, 0, 0])
    np.testing.assert_allclose(z[3], (x[3] - 10) / np.std(x[3]))
    assert not np.isnan(z).any()


def test_pad_with_mask_only_when_lengths_differ():
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, 5.0, 6.0, 7.0, 8.0]])
    x, lengths = to_array([a, b], "pad")
    assert x.dtype == np.float32 and x.shape == (2, 2, 5) and lengths.tolist() == [3, 5]
    np.testing.assert_array_equal(x[0], [[1, 2, 3, 0, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(x[1], [[4, 5, 6, 7, 8], [1, 1, 1, 1, 1]])
    cut, _ = to_array([a, b], "pad", length=4)
    np.testing.assert_array_equal(cut[1], [[4, 5, 6, 7], [1, 1, 1, 1]])
    same, _ = to_array([a, a * 2], "pad")
    assert same.shape == (2, 1, 3)  # one length: no mask channel
    padded, _ = to_array([a, a * 2], "pad", length=5)
    assert padded.shape == (2, 1, 5) and padded[1, 0].tolist() == [2, 4, 6, 0, 0]


def test_resample_against_np_interp_and_torch():
    rng = np.random.default_rng(2)
    series = [rng.normal(size=(2, n)) for n in (5, 13, 9)]
    x, _ = to_array(series, "resample", length=9)
    assert x.shape == (3, 2, 9)
    for s, row in zip(series, x):
        for c in range(2):
            want = np.interp(np.linspace(0, s.shape[1] - 1, 9), np.arange(s.shape[1]), s[c])
            np.testing.assert_allclose(row[c], want, rtol=1e-6, atol=1e-6)
        t = F.interpolate(torch.as_tensor(s)[None], size=9, mode="linear", align_corners=True)[0]
        np.testing.assert_allclose(row, t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x[2], series[2].astype(np.float32))  # already of the length: untouched


def test_layout_from_training_split_applies_to_new_series():
    rng = np.random.default_rng(3)
    train = [rng.normal(size=(2, 6)) for _ in range(4)]
    layout = SeriesLayout.fit(train, "pad")
    assert (layout.channels, layout.length, layout.mask) == (2, 6, False)
    again = SeriesLayout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert again == layout
    new = [rng.normal(size=(2, 4)), rng.normal(size=(2, 9))]
    x = prepare_series(new, again)
    assert x.dtype == torch.float32 and x.shape == (2, 2, 6)  # the training layout, no mask added
    np.testing.assert_allclose(x[0, :, :4].numpy(), znormalise(new[0]), rtol=1e-6, atol=1e-6)
    assert x[0, :, 4:].abs().sum() == 0
    ragged = SeriesLayout.fit([rng.normal(size=(2, n)) for n in (3, 5)], "pad")
    assert ragged.mask and ragged.input_shape == (3, 5)
    y = prepare_series([rng.normal(size=(2, 5))] * 2, ragged)  # equal lengths now, still the mask
    assert y.shape == (2, 3, 5) and y[:, 2].eq(1).all()
    with pytest.raises(UserError, match=r"series 0 .*3 channels.*2"):
        prepare_series([rng.normal(size=(3, 5))], ragged)
    with pytest.raises(UserError, match=r"series 4 of 'f.csv'"):
        prepare_series([np.array([[1.0, np.nan]])], SeriesLayout(1, 2, missing="error"), "f.csv", [4])


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_shapes_determinism_and_identity():
    x = torch.randn(8, 3, 50)
    aug = SeriesAugment(jitter=0.1, scaling=0.2, window_slice=0.2, window_warp=0.2)
    a, b = aug(x, _gen(1)), aug(x, _gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(2)))
    off = SeriesAugment()
    assert off(x, _gen()) is x
    assert SeriesAugment(jitter=0.1)(x.double(), _gen()).dtype == torch.float64


def test_augment_jitter_and_scaling_statistics():
    x = torch.randn(64, 2, 400)
    noise = SeriesAugment(jitter=0.5)(x, _gen()) - x
    assert abs(float(noise.std()) - 0.5) < 0.02 and abs(float(noise.mean())) < 0.02
    ratio = SeriesAugment(scaling=0.3)(x, _gen()) / x
    per = ratio[..., :1]
    torch.testing.assert_close(ratio, per.expand_as(ratio), rtol=1e-4, atol=1e-4)  # one factor per series/channel
    assert abs(float(per.std()) - 0.3) < 0.08 and abs(float(per.mean()) - 1) < 0.08


def test_augment_window_slice_and_warp_on_a_ramp():
    length = 40
    ramp = torch.arange(length, dtype=torch.float32).expand(16, 1, length).clone()
    sliced = SeriesAugment(window_slice=0.25)(ramp, _gen(3))
    keep = round(0.75 * length)
    steps = sliced[..., 1:] - sliced[..., :-1]
    torch.testing.assert_close(steps, torch.full_like(steps, (keep - 1) / (length - 1)))  # a stretched window
    assert (sliced[..., 0] >= 0).all() and (sliced[..., -1] <= length - 1 + 1e-5).all()
    assert sliced[..., 0].unique().numel() > 1  # windows start in different places
    warped = SeriesAugment(window_warp=0.3)(ramp, _gen(4))
    d = warped[..., 1:] - warped[..., :-1]
    assert (d >= -1e-5).all()  # time still runs forward
    torch.testing.assert_close(warped[..., 0], ramp[..., 0])
    torch.testing.assert_close(warped[..., -1], ramp[..., -1])
    assert (d.max(-1).values - d.min(-1).values > 0.5).all()  # sped up somewhere, slowed down elsewhere


def test_augment_leaves_the_mask_channel_and_padding_alone():
    rng = np.random.default_rng(5)
    series = [rng.normal(size=(2, n)) for n in (10, 25, 17, 30)]
    x = torch.from_numpy(to_array(series, "pad", 30)[0])
    aug = SeriesAugment(jitter=0.2, scaling=0.2, window_slice=0.3, window_warp=0.3, mask_channel=True)
    out = aug(x, _gen(6))
    assert out.shape == x.shape
    assert torch.equal(out[:, -1], x[:, -1])
    pad = x[:, -1:].expand(-1, 2, -1) == 0
    assert out[:, :2][pad].abs().max() == 0  # padding stays zero
    assert not torch.equal(out[:, :2], x[:, :2])


# --------------------------------------------------------------------------------------------
# The series dataset
# --------------------------------------------------------------------------------------------


def _write_csv(path: Path, labels: list[str], series: list[np.ndarray], width: int) -> None:
    lines = []
    for lab, s in zip(labels, series):
        cells = [repr(float(v)) for v in s] + [""] * (width - len(s))
        lines.append(",".join([lab] + cells))
    path.write_text("\n".join(lines) + "\n")


def test_series_dataset_stratified_split_and_training_layout(tmp_path):
    labels = ["a"] * 13 + ["b"] * 7 + ["c"] * 22
    targets = [0] * 13 + [1] * 7 + [2] * 22
    tr, va = stratified_indices(targets, 0.25, seed=4)
    # the same draw as the data layer's split
    ref_tr, ref_va = stratified_split(torch.tensor(targets), 0.25, 4)
    assert tr == ref_tr.tolist() and va == ref_va.tolist()
    # each class keeps its share: round(0.25 * 13), round(0.25 * 7), round(0.25 * 22)
    assert np.bincount([targets[i] for i in va]).tolist() == [3, 2, 6]
    assert sorted(tr + va) == list(range(42))
    rng = np.random.default_rng(6)
    lengths = [8 + (i % 5) for i in range(42)]
    lengths[va[0]] = 20  # the longest series sits in the validation split
    series = [rng.normal(size=n) for n in lengths]
    _write_csv(tmp_path / "toy_TRAIN.csv", labels, series, 20)
    b = _build("series", path=str(tmp_path), val_fraction=0.25, split_seed=4)
    layout = SeriesLayout.from_dict(b.extra["series_layout"])
    assert b.extra["task"] == "timeseries" and b.test is None
    assert layout.length == 12 and layout.mask and b.input_shape == (2, 12)  # from the training split only
    assert len(b.train) == 31 and len(b.val) == 11
    assert b.train.targets == [targets[i] for i in tr] and b.val.targets == [targets[i] for i in va]
    x, y = b.train[0]
    assert x.dtype == torch.float32 and x.shape == (2, 12) and y == targets[tr[0]]
    n0 = lengths[tr[0]]
    np.testing.assert_allclose(x[0, :n0].numpy(), znormalise(series[tr[0]][None])[0], rtol=1e-5, atol=1e-6)
    assert x[1].tolist() == [1.0] * n0 + [0.0] * (12 - n0)
    xv, _ = b.val[0]
    assert xv.shape == (2, 12) and xv[1].sum() == 12  # the long one cut to the training length
    assert b.mean == (0.0,) and b.std == (1.0,) and b.classes == ["a", "b", "c"]


def test_series_dataset_test_file_only_in_the_folder_layout(tmp_path):
    rng = np.random.default_rng(7)
    labels = ["x", "y"] * 10
    _write_csv(tmp_path / "toy_TRAIN.csv", labels, [rng.normal(size=6) for _ in labels], 6)
    (tmp_path / "toy_TEST.csv").write_text("x,1,2,3,4,5,6\nw,1,2,3,4,5,6\n")  # a class the training set lacks
    alone = _build("series", path=str(tmp_path / "toy_TRAIN.csv"), val_fraction=0.25)
    assert alone.test is None
    with pytest.raises(UserError, match=r"toy_TEST.csv.*'w'.*\['x', 'y'\]"):
        _build("series", path=str(tmp_path), val_fraction=0.25)
    (tmp_path / "toy_TEST.csv").write_text("x,1,2,3,4,5,6\ny,6,5,4,3,2,1\ny,1,1,1,1,1,1\n")
    b = _build("series", path=str(tmp_path), val_fraction=0.25)
    assert len(b.test) == 3 and b.test.targets == [0, 1, 1] and b.test.x.shape == (3, 1, 6)
    assert b.test.x[2].abs().sum() == 0  # a constant series z-normalises to zeros
    with pytest.raises(UserError, match=r"data.image_size=32 is an image option"):
        _build("series", path=str(tmp_path), image_size=32)
    with pytest.raises(UserError, match=r"data.lookback=4 is a forecast option"):
        _build("series", path=str(tmp_path), lookback=4)


def test_series_dataset_through_load_data(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 2, 16))
    np.savez(tmp_path / "m.npz", X=x, y=np.repeat(["u", "v", "w"], 10))
    cfg = DataConfig(name="series", path=str(tmp_path / "m.npz"), val_fraction=0.3, unequal_length="resample",
                     series_length=8, subset=12)
    b = load_data(cfg, task="timeseries")
    assert b.input_shape == (2, 8) and len(b.val) == 9 and len(b.train) == 12
    assert b.extra["series_layout"]["mode"] == "resample" and b.extra["series_layout"]["mask"] is False
    item, _ = b.train[0]
    assert item.shape == (2, 8)


# --------------------------------------------------------------------------------------------
# The forecast dataset
# --------------------------------------------------------------------------------------------


def _series_csv(path: Path, steps: int = 20) -> None:
    rows = ["date,a,b,note"] + [f"d{t},{t},{100 + 2 * t},n{t}" for t in range(steps)]
    path.write_text("\n".join(rows) + "\n")


def test_read_forecast_csv_columns_and_errors(tmp_path):
    path = tmp_path / "s.csv"
    _series_csv(path, 5)
    f = read_forecast_csv(path)
    assert f.columns == ["a", "b"] and f.times == ["d0", "d1", "d2", "d3", "d4"]  # 'note' is not numeric
    np.testing.assert_array_equal(f.values, [[t, 100 + 2 * t] for t in range(5)])
    assert read_forecast_csv(path, value_columns=["b"]).columns == ["b"]
    with pytest.raises(UserError, match=r"'c' is not a column.*'a', 'b'"):
        read_forecast_csv(path, value_columns=["c"])
    with pytest.raises(UserError, match=r"row 2, column 'note': 'n0' is not a number"):
        read_forecast_csv(path, value_columns=["a", "note"])
    year = tmp_path / "y.csv"
    year.write_text("year,v\n2000,1\n2001,\n2002,3\n")
    g = read_forecast_csv(year)
    assert g.columns == ["v"] and g.times == ["2000", "2001", "2002"] and np.isnan(g.values[1, 0])
    plain = tmp_path / "p.csv"
    plain.write_text("x,v\n1,2\n3,4\n")
    assert read_forecast_csv(plain).columns == ["x", "v"] and read_forecast_csv(plain).times is None
    short = tmp_path / "one.csv"
    short.write_text("date,v\nd0,1\n")
    with pytest.raises(UserError, match=r"1 row of values"):
        read_forecast_csv(short)


def test_forecast_windows_by_hand(tmp_path):
    path = tmp_path / "s.csv"
    _series_csv(path, 20)
    b = _build("forecast", path=str(path), lookback=3, horizon=2, val_fraction=0.25, target_columns=["b"])
    train_steps = 15  # the last 5 of 20 steps validate
    a, bb = np.arange(20.0), 100 + 2 * np.arange(20.0)
    mean = [a[:train_steps].mean(), bb[:train_steps].mean()]
    std = [a[:train_steps].std(), bb[:train_steps].std()]
    assert b.extra["scale"]["mean"] == pytest.approx(mean) and b.extra["scale"]["std"] == pytest.approx(std)
    assert mean[0] != pytest.approx(a.mean())  # the training part's scale, not the whole series'
    assert b.classes == ["b+1", "b+2"] and b.input_shape == (2, 3) and b.val is not None
    assert b.train.starts == list(range(0, 11)) and b.val.starts == [12, 13, 14, 15]
    x, y = b.train[0]
    assert x.dtype == torch.float32 and x.shape == (2, 3) and y.shape == (1, 2)
    np.testing.assert_allclose(x[0].numpy(), (a[:3] - mean[0]) / std[0], rtol=1e-6)
    np.testing.assert_allclose(y[0].numpy(), (bb[3:5] - mean[1]) / std[1], rtol=1e-6)
    xv, yv = b.val[0]
    np.testing.assert_allclose(xv[1].numpy(), (bb[12:15] - mean[1]) / std[1], rtol=1e-6)  # reaches back
    np.testing.assert_allclose(yv[0].numpy(), (bb[15:17] - mean[1]) / std[1], rtol=1e-6)
    train_targets = {s for i in range(len(b.train)) for s in b.train.target_steps(i)}
    val_targets = {s for i in range(len(b.val)) for s in b.val.target_steps(i)}
    assert max(train_targets) == train_steps - 1 and min(val_targets) == train_steps
    assert val_targets == set(range(15, 20)) and not train_targets & val_targets
    layout = ForecastLayout.from_dict(json.loads(json.dumps(b.extra["forecast_layout"])))
    np.testing.assert_allclose(layout.unscale_targets(yv.numpy()), bb[None, 15:17], rtol=1e-5)
    torch.testing.assert_close(layout.window(np.stack([a, bb], 1)[:15]), xv[None])
    assert b.extra["train_values"] == [bb[:train_steps].tolist()]
    assert b.extra["forecast_layout"]["mase_scale"] == pytest.approx([2.0])  # |b[t+1] - b[t]| = 2
    assert b.extra["times"][0] == "d0" and b.extra["lookback"] == 3 and b.extra["horizon"] == 2
    seasonal = _build("forecast", path=str(path), lookback=4, horizon=1, season=4, target_columns=["a"])
    assert seasonal.extra["forecast_layout"]["mase_scale"] == pytest.approx([4.0])


def test_forecast_errors_name_the_value(tmp_path):
    path = tmp_path / "s.csv"
    _series_csv(path, 20)
    with pytest.raises(UserError, match=r"data.lookback"):
        _build("forecast", path=str(path))
    with pytest.raises(UserError, match=r"data.horizon=25 is longer than the series.*20 steps"):
        _build("forecast", path=str(path), lookback=2, horizon=25)
    with pytest.raises(UserError, match=r"'z' is not a value column.*'a', 'b'"):
        _build("forecast", path=str(path), lookback=2, target_columns=["z"])
    with pytest.raises(UserError, match=r"'q' is not a column"):
        _build("forecast", path=str(path), lookback=2, value_columns=["a", "q"])
    with pytest.raises(UserError, match=r"data.subset=5 is not a forecast option"):
        _build("forecast", path=str(path), lookback=2, subset=5)
    gap = tmp_path / "g.csv"
    gap.write_text("date,v\n" + "\n".join(f"d{t},{'' if t == 6 else t}" for t in range(12)) + "\n")
    with pytest.raises(UserError, match=r"row 8, column 'v'"):
        _build("forecast", path=str(gap), lookback=2, missing="error")
    filled = _build("forecast", path=str(gap), lookback=2, val_fraction=0.25)
    x, _ = filled.train[5]  # steps 5, 6: the gap interpolated to 6
    std, mean = filled.extra["scale"]["std"][0], filled.extra["scale"]["mean"][0]
    np.testing.assert_allclose(x[0].numpy() * std + mean, [5, 6], rtol=1e-5)


def test_forecast_statsmodels_sets():
    pytest.importorskip("statsmodels")
    b = _build("forecast", path="statsmodels:sunspots", lookback=20, horizon=3, val_fraction=0.1)
    assert b.extra["columns"] == ["SUNACTIVITY"] and len(b.extra["times"]) == 309 and b.extra["times"][0] == "1700"
    assert len(b.val) == 31 - 3 + 1 and len(b.train) == 278 - 20 - 3 + 1
    co2 = _build("forecast", path="statsmodels:co2", lookback=52, horizon=4, val_fraction=0.1)
    assert not any(torch.isnan(co2.train[i][0]).any() for i in range(0, len(co2.train), 50))
    with pytest.raises(UserError, match=r"statsmodels:sunspot.*did you mean 'sunspots'"):
        _build("forecast", path="statsmodels:sunspot", lookback=4)


# --------------------------------------------------------------------------------------------
# data.window_norm and data.val_fraction=0
# --------------------------------------------------------------------------------------------


def test_window_offset_by_hand():
    from cnnkit.data.timeseries.forecast import window_offset

    x = torch.tensor([[[1.0, 2.0, 6.0], [10.0, 0.0, -4.0]],
                      [[0.0, 0.0, 3.0], [5.0, 5.0, 5.0]]])  # (N=2, C=2, L=3)
    np.testing.assert_array_equal(window_offset(x, "last").numpy(), [[[6.0], [-4.0]], [[3.0], [5.0]]])
    np.testing.assert_allclose(window_offset(x, "mean").numpy(), [[[3.0], [2.0]], [[1.0], [5.0]]])
    np.testing.assert_array_equal(window_offset(x, "none").numpy(), np.zeros((2, 2, 1)))
    with pytest.raises(UserError, match=r"data.window_norm='max'; allowed: none, last, mean"):
        window_offset(x, "max")


def test_window_norm_is_saved_in_the_layout_and_old_layouts_read_none(tmp_path):
    path = tmp_path / "s.csv"
    _series_csv(path, 20)
    b = _build("forecast", path=str(path), lookback=3, horizon=2, val_fraction=0.25, window_norm="last")
    assert b.extra["forecast_layout"]["window_norm"] == "last"
    # the items are unchanged by it (the task applies it around the network): the same as without
    plain = _build("forecast", path=str(path), lookback=3, horizon=2, val_fraction=0.25)
    torch.testing.assert_close(b.train[4][0], plain.train[4][0])
    assert plain.extra["forecast_layout"]["window_norm"] == "none"
    old = {k: v for k, v in b.extra["forecast_layout"].items() if k != "window_norm"}  # a run saved before it
    assert ForecastLayout.from_dict(old).window_norm == "none"
    with pytest.raises(UserError, match=r"window_norm='lastt'; allowed: none, last, mean"):
        ForecastLayout.from_dict({**old, "window_norm": "lastt"})
    with pytest.raises(UserError, match=r"data.window_norm='last' is a forecast option"):
        _build("series", path=str(tmp_path / "m.npz"), window_norm="last")


def test_val_fraction_zero_is_refused_with_the_smallest_that_works(tmp_path):
    import re

    path = tmp_path / "s.csv"
    _series_csv(path, 40)
    with pytest.raises(UserError, match=r"data.val_fraction=0.0: task forecast needs a validation part") as e:
        _build("forecast", path=str(path), lookback=3, horizon=5, val_fraction=0.0)
    smallest = float(re.search(r"the smallest that holds one horizon of 5 steps of the 40 is ([0-9.]+)",
                               str(e.value)).group(1))
    assert smallest == 0.125  # 5 of 40 steps
    assert len(_build("forecast", path=str(path), lookback=3, horizon=5, val_fraction=smallest).val) == 1
    with pytest.raises(UserError, match=r"shorter than data.horizon=5"):
        _build("forecast", path=str(path), lookback=3, horizon=5, val_fraction=smallest - 0.02)
    labels = ["a"] * 9 + ["b"] * 21
    _write_csv(tmp_path / "toy_TRAIN.csv", labels, [np.arange(6.0) * (i % 3) for i in range(30)], 6)
    with pytest.raises(UserError, match=r"data.val_fraction=0.0: task timeseries needs validation series") as e:
        _build("series", path=str(tmp_path / "toy_TRAIN.csv"), val_fraction=0.0)
    smallest = float(re.search(r"the smallest that holds out a series, of the largest class, is ([0-9.]+)",
                               str(e.value)).group(1))
    assert len(_build("series", path=str(tmp_path / "toy_TRAIN.csv"), val_fraction=smallest).val) == 1
    assert round((smallest - 0.001) * 21) == 0  # and it is the smallest (to 0.001)
