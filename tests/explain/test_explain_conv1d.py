"""``cnnkit explain conv1d``: a 1-D convolution walked output by output.

Oracles: a causal, dilated example worked out by hand; torch's F.conv1d (with the padding rule
written out independently: zeros before for causal, torch's own 'same' at stride 1, the TF rule's
lengths by hand) on a grid of settings; the positions each output reads, from the formula
t = i*s + p*d - before; user errors end with exit 2 and one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.cli import main
from cnnkit.errors import UserError
from cnnkit.explain.conv1d import (DEFAULT_KERNEL, DEFAULT_SERIES, explain_conv1d, parse_values, render_text,
                                   to_json)

SERIES = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 9.0, 8.0]


def torch_conv1d(x, w, bias, stride, dilation, padding):
    """torch's answer, each padding rule spelled out without cnnkit."""
    xt = torch.tensor(x, dtype=torch.float64)[None, None]
    wt = torch.tensor(w, dtype=torch.float64)[None, None]
    bt = torch.tensor([bias], dtype=torch.float64)
    k = len(w)
    if padding == "causal":
        xt, pad = F.pad(xt, ((k - 1) * dilation, 0)), 0
    elif padding == "same" and stride == 1:
        pad = "same"                                # torch's own rule (the odd zero at the end)
    elif padding == "same":
        # TF: out = ceil(L/s), total = max((out-1)*s + d(k-1) + 1 - L, 0), the odd zero at the end
        n = len(x)
        out = -(-n // stride)
        total = max((out - 1) * stride + dilation * (k - 1) + 1 - n, 0)
        xt, pad = F.pad(xt, (total // 2, total - total // 2)), 0
    elif padding == "valid":
        pad = 0
    else:
        pad = int(padding)
    with warnings.catch_warnings():                 # torch notes that an even 'same' kernel copies the input
        warnings.simplefilter("ignore", UserWarning)
        return F.conv1d(xt, wt, bt, stride=stride, padding=pad, dilation=dilation)[0, 0].numpy()


# --------------------------------------------------------------------------- by hand


def test_causal_dilated_walk_by_hand():
    # kernel (1, 0, -1), dilation 2, causal: 4 zeros before; y[i] = x[i-4] - x[i] + 0.5
    res = explain_conv1d(SERIES, [1, 0, -1], dilation=2, padding="causal", bias=0.5)
    assert res["pads"] == (4, 0) and res["span"] == 5 and res["output_length"] == 8
    first, last = res["steps"][0], res["steps"][7]
    assert first["positions"] == [-4, -2, 0] and first["padded"] == [True, True, False]
    assert first["inputs"] == [0.0, 0.0, 1.0] and first["products"] == [0.0, 0.0, -1.0]
    assert first["expression"] == "1*0 + 0*0 + (-1)*1 + 0.5 = -0.5"
    assert last["positions"] == [3, 5, 7] and last["inputs"] == [5.0, 6.0, 8.0]
    assert last["sum"] == -3.0 and last["value"] == -2.5
    expected = [0 - 1, 0 - 3, 0 - 2, 0 - 5, 1 - 4, 3 - 6, 2 - 9, 5 - 8]
    np.testing.assert_array_equal(res["output"], np.array(expected) + 0.5)
    assert res["max_abs_diff"] == 0.0
    assert res["length_formula"].startswith("causal: (k-1)*d = (3-1)*2 = 4 zeros before, none after")


def test_every_output_reads_the_positions_of_the_formula():
    for padding in ("valid", "same", "causal", 2):
        for s in (1, 2, 3):
            for d in (1, 2, 3):
                res = explain_conv1d(SERIES, [1, -2, 3], stride=s, dilation=d, padding=padding)
                before = res["pads"][0]
                for st in res["steps"]:
                    i = st["index"]
                    assert st["positions"] == [i * s + p * d - before for p in range(3)]
                    assert np.diff(st["positions"]).tolist() == [d, d]          # dilation skips d - 1
                    assert st["padded"] == [not 0 <= t < 8 for t in st["positions"]]
                    assert st["inputs"] == [SERIES[t] if 0 <= t < 8 else 0.0 for t in st["positions"]]
                    # the last tap reads (k-1)*d - before positions past i*s
                    assert st["ahead"] == max(st["positions"]) - i * s == 2 * d - before
                if padding == "causal":                                          # never the future
                    assert before == 2 * d and res["output_length"] == -(-8 // s)
                    assert to_json(res)["causal"] is True
                elif padding in ("valid", "same"):
                    assert all(st["ahead"] > 0 for st in res["steps"])
                    assert to_json(res)["causal"] is False


@pytest.mark.parametrize("padding", ["valid", "same", "causal", 0, 1, 3])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2])
def test_matches_torch_conv1d(padding, stride, dilation):
    w, b = [0.5, -1.0, 2.0, 0.25], -0.75                      # 4 taps: a span of 4 or 7, the series has 8
    res = explain_conv1d(SERIES, w, stride=stride, dilation=dilation, padding=padding, bias=b)
    expected = torch_conv1d(SERIES, w, b, stride, dilation, padding)
    np.testing.assert_allclose(res["output"], expected, rtol=0, atol=1e-12)      # the reference engine
    np.testing.assert_allclose(res["output_steps"], expected, rtol=0, atol=1e-12)  # the hand arithmetic
    assert res["output_length"] == len(expected)


def test_json_has_the_positions_products_and_sums(cli):
    code, out = cli("conv1d", "--series", "1,3,2,5,4", "--kernel", "1,1", "--dilation", "2", "--padding", "causal",
                    "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["op"] == "conv1d" and data["padding"] == "causal" and data["pads"] == {"before": 2, "after": 0}
    assert data["causal"] is True and data["output"] == [1.0, 3.0, 3.0, 8.0, 6.0]
    step = data["steps"][3]
    assert step["positions"] == [1, 3] and step["inputs"] == [3.0, 5.0] and step["products"] == [3.0, 5.0]
    assert step["sum"] == 8.0 and step["value"] == 8.0 and step["ahead"] == 0
    assert data["max_abs_diff_steps_vs_reference"] == 0.0
    code, out = cli("conv1d", "--series", "1,3,2,5,4", "--padding", "same", "--format", "json")
    assert json.loads(out)["causal"] is False


def test_text_output_and_the_default_example(cli):
    code, out = cli("conv1d")
    assert code == 0
    assert out.startswith("1-D convolution (cross-correlation, like torch's conv1d) - the default example")
    assert f"series of {len(DEFAULT_SERIES.split(','))}, kernel of 3 taps (weights 1 0 -1)" in out
    assert "y[0]  (1/6) reads x[0]=1, x[1]=3, x[2]=2" in out and "1*1 + 0*3 + (-1)*2 = -1" in out
    assert "not causal" in out and "max |difference| = 0.0e+00" in out
    code, out = cli("conv1d", "--padding", "causal", "--dilation", "2", "--bias", "1/2")
    assert "y[0]  (1/8) reads x[-4]=0 (pad), x[-2]=0 (pad), x[0]=1  (reads up to position 0 = i*s: nothing later)" \
        in out
    assert "dilation 2: the taps are 2 apart, skipping the 1 position between" in out
    assert "causal: the last tap of output i is position i*1" in out
    assert "no output reads a position after its own (i*s): causal" in out
    assert "output: -0.5 -2.5 -1.5 -4.5 -2.5 -2.5 -6.5 -2.5" in out
    res = explain_conv1d(DEFAULT_SERIES, DEFAULT_KERNEL, padding="same", stride=2)
    assert to_json(res)["output"] == res["output"].tolist() and "same: out = ceil(8/2) = 4" in render_text(res)


def test_values_parse_with_commas_spaces_and_fractions():
    assert parse_values("1, 2 3,-4 1/4") == [1.0, 2.0, 3.0, -4.0, 0.25]
    assert parse_values([1, 2.5]) == [1.0, 2.5]
    for bad in ("", "  ", "1,x", "1/0", "nan", "inf"):
        with pytest.raises(UserError):
            parse_values(bad)


# --------------------------------------------------------------------------- user errors: exit 2, one line


@pytest.mark.parametrize("argv, words", [
    (["--series", ""], ["--series is empty"]),
    (["--series", " , "], ["--series is empty"]),
    (["--kernel", ""], ["--kernel is empty"]),
    (["--series", "1,2", "--kernel", "1,0,-1"], ["kernel of 3 taps", "spans 3 positions", "series of 2"]),
    (["--series", "1,2,3,4", "--dilation", "2"], ["spans 5 positions", "more than the series of 4"]),
    (["--series", "1,2,3", "--padding", "1", "--kernel", "1,1,1,1,1,1"], ["more than the padded series of 5"]),
    (["--series", "1,two,3"], ["--series: 'two' is not a number"]),
    (["--kernel", "1;;x"], ["--kernel: 'x' is not a number"]),
    (["--stride", "0"], ["--stride '0' is not allowed"]),
    (["--stride", "1.5"], ["--stride '1.5' is not an int"]),
    (["--dilation", "x"], ["--dilation 'x' is not an int"]),
    (["--padding", "casual"], ["--padding 'casual' is not allowed", "did you mean 'causal'"]),
    (["--padding", "-1"], ["--padding '-1' is not allowed"]),
    (["--bias", "b"], ["--bias: 'b' is not a number"]),
])
def test_bad_inputs_exit_2_with_one_clear_message(argv, words, capsys):
    assert main(["explain", "conv1d", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_help_and_the_walk_import_no_torch():
    probe = (
        "import sys, io, contextlib\n"
        "from cnnkit.cli import main\n"
        "codes = []\n"
        "try:\n"
        "    main(['explain', 'conv1d', '--help'])\n"
        "except SystemExit as e:\n"
        "    codes.append(e.code)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes.append(main(['explain', 'conv1d', '--padding', 'causal', '--format', 'json']))\n"
        "print(codes, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[0, 0] False"
