"""The --device and --dtype options every model benchmark shares, the line that says where it ran,
and peak-memory measurement (not a benchmark: tests/test_bench.py skips files starting with "_").

    from _device import add_device_args, resolve, device_line      # bench/ is the script's folder
    add_device_args(parser)                  # --device (default cuda when available, else cpu), --dtype
    device, dtype = resolve(args)            # SystemExit with one line when the device is not there
    print(device_line(device, dtype, "autocast"))
    with autocast(device, dtype): ...        # nullcontext for float32
    with PeakMemory(device) as peak: ...     # peak.gb, peak.label

A script run as ``python bench/x.py`` has bench/ on sys.path, so ``from _device import ...`` works.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import platform
import re
import resource
import time

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DeviceUnavailable(ValueError):
    """The device string does not name a usable device here (the message is one line)."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_args(parser: argparse.ArgumentParser, *, dtype_help: str = "") -> None:
    """Add --device and --dtype; ``dtype_help`` says how the script applies the dtype."""
    parser.add_argument("--device", default=None,
                        help="a torch device string: cpu, cuda, cuda:1, mps, ... "
                             f"(default: cuda when available, else cpu; here {default_device()})")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="float32 (default), float16 or bfloat16" + (f": {dtype_help}" if dtype_help else ""))


def check_device(spec: str | None) -> torch.device:
    """The torch.device for ``spec`` (None: the default), or DeviceUnavailable with a one-line reason."""
    spec = spec or default_device()
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise DeviceUnavailable(f"--device {spec!r} is not a torch device string (e.g. cpu, cuda, cuda:1, mps)"
                                ) from exc
    if dev.type == "meta":
        raise DeviceUnavailable("--device meta holds no data: nothing to benchmark")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceUnavailable(f"--device {spec}: CUDA is not available here (torch {torch.__version__}, {build}); "
                                    "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceUnavailable(f"--device {spec}: MPS is not available here")
    elif dev.type != "cpu":
        try:                                     # any other backend: can it hold a tensor?
            torch.zeros(1, device=dev)
        except Exception as exc:  # noqa: BLE001 - the backend's own error, made one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DeviceUnavailable(f"--device {spec}: not available here ({first})") from None
    return dev


def check_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise DeviceUnavailable(f"--dtype {name!r}: one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) from parsed --device/--dtype; exits with a one-line error if unusable."""
    try:
        return check_device(args.device), check_dtype(args.dtype)
    except DeviceUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _cpu_name() -> str:
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1]
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    name = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$", "", name)
    return " ".join(name.split()) or "unknown CPU"


def device_name(device: torch.device) -> str:
    """'NVIDIA H200' or 'Intel Xeon, 2 threads'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"{_cpu_name()}, {n} thread{'s' if n != 1 else ''}"
    return device.type


def device_line(device: torch.device, dtype: torch.dtype, how: str = "") -> str:
    """'device: cpu (Intel Xeon, 2 threads), dtype float32' (+ ' (how)' for a non-float32 dtype)."""
    note = f" ({how})" if how and dtype != torch.float32 else ""
    return f"device: {device} ({device_name(device)}), dtype {dtype_name(dtype)}{note}"


def autocast(device: torch.device, dtype: torch.dtype):
    """torch.autocast to ``dtype`` on ``device``; a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn, device: torch.device, n: int = 1) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, the device synchronised around them."""
    synchronize(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return (time.perf_counter() - t) / n


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL("libc.so.6"))
            # glibc serves freed large blocks again from its heap (its mmap threshold grows up to 32 MiB),
            # so the RSS would follow heap fragmentation more than live tensors (tiny decodes measured
            # 110-300 MB at random where the live peak is ~90 MB). A fixed 1 MiB threshold
            # (M_MMAP_THRESHOLD = -3) maps every block above it and unmaps it when freed.
            _LIBC[0].mallopt(-3, 1 << 20)
        except (OSError, AttributeError):
            _LIBC.append(None)
    return _LIBC[0]


def _trim_heap() -> None:
    """Give freed heap pages back to the OS, so that memory freed by an earlier phase does not hide
    this phase's growth; a no-op where there is no glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class PeakMemory:
    """Peak memory of the block. CUDA: torch.cuda.max_memory_allocated after
    reset_peak_memory_stats (all live tensors, weights included; ``reserved_gb`` is the caching
    allocator's peak). CPU (Linux): the process's peak RSS increase over the RSS at entry
    (VmHWM reset through /proc/self/clear_refs), so weights already resident are not in it; from
    the first such measurement on, glibc maps blocks over 1 MiB and unmaps them when freed (see
    _libc), so that the RSS follows live memory.
    Elsewhere: ru_maxrss, the process's lifetime peak. ``label`` says which one it is."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = 0
        self.reserved_bytes: int | None = None
        self.label = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.label = "peak CUDA memory allocated"
        else:
            _trim_heap()
            self._before = _status_kb("VmRSS:")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")                    # the peak RSS (VmHWM) restarts from now
                self.label = "peak RSS increase"
            except OSError:
                self._before = None
                self.label = "peak RSS (process lifetime)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
            self.reserved_bytes = torch.cuda.max_memory_reserved(self.device)
        elif self._before is not None:
            self.bytes = max(0, (_status_kb("VmHWM:") or 0) - self._before) * 1024
        else:
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def gb(self) -> float:
        return self.bytes / 1e9

    @property
    def reserved_gb(self) -> float | None:
        return None if self.reserved_bytes is None else self.reserved_bytes / 1e9

    def describe(self) -> str:
        """'3.21 GB peak CUDA memory allocated (3.50 GB reserved)' or '712 MB peak RSS increase'."""
        extra = f" ({fmt_bytes(self.reserved_bytes)} reserved)" if self.reserved_bytes is not None else ""
        return f"{fmt_bytes(self.bytes)} {self.label}{extra}"


def fmt_bytes(n: float) -> str:
    """'5.90 GB' from 1 GB up, else '712 MB' (decimal units, as the paper's GB)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e6:.2f} MB"


def module_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the modules' parameters and buffers."""
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


__all__ = ["DTYPES", "DeviceUnavailable", "PeakMemory", "add_device_args", "autocast", "check_device", "check_dtype",
           "default_device", "device_line", "device_name", "dtype_name", "fmt_bytes", "module_bytes", "resolve", "synchronize", "timed"]
