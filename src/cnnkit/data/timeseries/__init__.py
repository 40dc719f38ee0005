"""Time series: labelled series from files (:mod:`~cnnkit.data.timeseries.formats`: UCR/UEA ``.ts``,
CSV/TSV, ``.npz`` / ``.npy``), their preparation into one array with a layout fitted on the training
split (:mod:`~cnnkit.data.timeseries.prepare`), batch augmentations (:mod:`~cnnkit.data.timeseries.augment`),
and the two datasets: ``series`` (task ``timeseries``, :mod:`~cnnkit.data.timeseries.dataset`) and
``forecast`` (task ``forecast``, :mod:`~cnnkit.data.timeseries.forecast`).

Importing :mod:`cnnkit.data` registers both datasets.

Example::

    from cnnkit.data.timeseries import SeriesLayout, prepare_series, read_series
    train = read_series("GunPoint_TRAIN.ts")                 # 50 series (1, 150), classes ['1', '2']
    layout = SeriesLayout.fit(train.series, mode="pad")      # length 150, no mask: one length
    x = prepare_series(train.series, layout)                 # torch.float32 (50, 1, 150), z-normalised
"""

from cnnkit.data.timeseries.augment import SeriesAugment
from cnnkit.data.timeseries.dataset import SeriesTensors, series_files, stratified_indices
from cnnkit.data.timeseries.forecast import (STATSMODELS_SETS, WINDOW_NORMS, ForecastFrame, ForecastLayout,
                                             ForecastWindows, read_forecast, read_forecast_csv, read_statsmodels,
                                             window_offset)
from cnnkit.data.timeseries.formats import SeriesData, class_order, read_series
from cnnkit.data.timeseries.prepare import SeriesLayout, fill_missing, prepare_series, to_array, znormalise

__all__ = ["STATSMODELS_SETS", "WINDOW_NORMS", "ForecastFrame", "ForecastLayout", "ForecastWindows", "SeriesAugment", "SeriesData",
           "SeriesLayout", "SeriesTensors", "class_order", "fill_missing", "prepare_series", "read_forecast",
           "read_forecast_csv", "read_series", "read_statsmodels", "series_files", "stratified_indices", "to_array",
           "window_offset", "znormalise"]
