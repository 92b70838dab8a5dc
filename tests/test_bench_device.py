"""bench/_device.py: the --device/--dtype options of the model benchmarks, their one-line errors,
the device line and the peak-memory measurement."""
import argparse
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
MODEL_BENCHES = ("dit_bench", "eval_bench", "music_screen_bench", "train_bench")


@pytest.fixture(scope="module")
def dev():
    spec = importlib.util.spec_from_file_location("_device", BENCH / "_device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse(dev, *argv):
    ap = argparse.ArgumentParser()
    dev.add_device_args(ap, dtype_help="weights cast")
    return ap.parse_args(list(argv))


def test_defaults_and_explicit_choices(dev):
    a = parse(dev)
    assert a.device is None and a.dtype == "float32"
    device, dtype = dev.resolve(a)
    assert device == torch.device("cuda" if torch.cuda.is_available() else "cpu") and dtype == torch.float32
    assert dev.resolve(parse(dev, "--device", "cpu", "--dtype", "bfloat16")) == (torch.device("cpu"), torch.bfloat16)
    assert dev.resolve(parse(dev, "--dtype", "float16"))[1] == torch.float16


def test_unknown_dtype_is_refused_by_argparse(dev, capsys):
    with pytest.raises(SystemExit):
        parse(dev, "--dtype", "float64")
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("spec, says", [("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available"),
                                        ("nosuchdevice", "not a torch device string"), ("meta", "holds no data")])
def test_unavailable_device_is_one_line_error(dev, monkeypatch, spec, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        dev.resolve(parse(dev, "--device", spec))
    msg = str(exc.value.code)
    assert msg.startswith(f"error: --device {spec}") or msg.startswith(f"error: --device '{spec}'")
    assert says in msg and "\n" not in msg


def test_device_line(dev):
    line = dev.device_line(torch.device("cpu"), torch.float32, "autocast")
    assert re.fullmatch(r"device: cpu \(.+, \d+ threads?\), dtype float32", line), line
    assert dev.device_line(torch.device("cpu"), torch.bfloat16, "autocast").endswith("dtype bfloat16 (autocast)")


def test_autocast_is_a_no_op_for_float32_and_casts_otherwise(dev):
    lin = torch.nn.Linear(4, 4)
    with dev.autocast(torch.device("cpu"), torch.float32):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    with dev.autocast(torch.device("cpu"), torch.bfloat16):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_on_cpu_is_the_rss_increase(dev):
    with dev.PeakMemory(torch.device("cpu")) as peak:
        x = torch.ones(64 * 2 ** 20 // 4)                  # 64 MiB, touched
        del x
    assert peak.label == "peak RSS increase"
    assert 0.05 < peak.gb < 1.0, peak.describe()
    assert peak.describe().endswith("MB peak RSS increase")


def test_fmt_and_module_bytes(dev):
    assert dev.fmt_bytes(5.9e9) == "5.90 GB" and dev.fmt_bytes(712e6) == "712 MB"
    assert dev.module_bytes(torch.nn.Linear(10, 10)) == 110 * 4
    assert dev.module_bytes(torch.nn.Linear(10, 10).to(torch.bfloat16)) == 110 * 2


@pytest.mark.parametrize("script", MODEL_BENCHES)
def test_model_benchmarks_refuse_an_unavailable_device_in_one_line(script, tmp_path):
    text = (BENCH / f"{script}.py").read_text()
    assert "add_device_args(" in text and "device_line(" in text, script
    env = dict(os.environ, HF_HUB_OFFLINE="1", SAO_NO_PROGRESS="1", OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--small", "--device", "nosuchdevice"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: --device 'nosuchdevice' is not a torch device"), r.stderr
    assert "Traceback" not in r.stderr
