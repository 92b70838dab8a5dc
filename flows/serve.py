"""`make serve`: start a local Prefect server on loopback (unless PREFECT_API_URL names one) and
serve the deployments of prefect.yaml with their schedules, until interrupted.

    python -m flows.serve [--config sao.toml] [--only daily-refresh] [--cron "*/5 * * * *"]
                          [--param base_url=http://...] [--no-server] [--port 4200]

The server keeps its database under [paths].data_dir/prefect (PREFECT_HOME); its UI is at
http://127.0.0.1:PORT. Flow runs the schedules start are subprocesses of this one.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]


class ServeError(RuntimeError):
    pass


def load_deployments(path: str | os.PathLike = REPO / "prefect.yaml", only: list[str] | None = None
                     ) -> list[dict[str, Any]]:
    """The deployments of prefect.yaml (only those named in ``only``), checked."""
    data = yaml.safe_load(pathlib.Path(path).read_text(encoding="utf-8")) or {}
    specs = data.get("deployments") or []
    names = [d.get("name") for d in specs]
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ServeError(f"{path}: no deployment named {', '.join(missing)} (have {', '.join(names)})")
        specs = [d for d in specs if d["name"] in only]
    for d in specs:
        if ":" not in str(d.get("entrypoint", "")):
            raise ServeError(f"{path}: deployment {d.get('name')!r}: entrypoint must be 'flows/FILE.py:FLOW'")
    return specs


def import_flow(entrypoint: str):
    file, name = entrypoint.split(":", 1)
    rel = pathlib.PurePosixPath(file)
    if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".py" or rel.parts[0] != "flows":
        raise ServeError(f"entrypoint {entrypoint!r}: must name a file under flows/")
    module = importlib.import_module(".".join(rel.with_suffix("").parts))
    return getattr(module, name)


def runner_deployments(specs: list[dict[str, Any]], *, config_path: str | None = None, cron: str | None = None,
                       params: dict[str, Any] | None = None) -> list:
    out = []
    for d in specs:
        fl = import_flow(d["entrypoint"])
        parameters = dict(d.get("parameters") or {})
        if config_path is not None:
            parameters["config_path"] = config_path
        parameters.update(params or {})
        crons = [cron] if cron else [s["cron"] for s in d.get("schedules") or [] if "cron" in s]
        out.append(fl.to_deployment(name=d["name"], cron=crons or None, parameters=parameters,
                                    description=d.get("description"), tags=d.get("tags"),
                                    concurrency_limit=d.get("concurrency_limit")))
    return out


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read() or b"false") is True
    except (OSError, ValueError):
        return False


def start_server(host: str = "127.0.0.1", port: int = 4200, home: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, wait_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on loopback; returns (process, API URL) once /api/health answers."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ServeError(f"the local Prefect server only listens on loopback, not {host!r}")
    e = dict(os.environ, **(env or {}))
    e.pop("PREFECT_API_URL", None)
    e.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if home:
        pathlib.Path(home).mkdir(parents=True, exist_ok=True)
        e["PREFECT_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                            env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://{host}:{port}/api"
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise ServeError(f"prefect server exited with {proc.returncode}: {err}")
        if healthy(url):
            return proc, url
        time.sleep(0.5)
    stop_server(proc)
    raise ServeError(f"prefect server on {url} did not become healthy in {wait_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param {text!r}: expected NAME=VALUE")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except ValueError:
        return k, v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="passed to every deployment as config_path")
    ap.add_argument("--only", action="append", help="serve only this deployment (repeatable)")
    ap.add_argument("--cron", help="replace every schedule with this cron (e.g. '* * * * *' to try it out)")
    ap.add_argument("--param", action="append", type=_param, default=[], help="NAME=VALUE for every deployment")
    ap.add_argument("--no-server", action="store_true", help="use the server PREFECT_API_URL names")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4200)
    ap.add_argument("--prefect-yaml", default=str(REPO / "prefect.yaml"))
    a = ap.parse_args(argv)
    specs = load_deployments(a.prefect_yaml, a.only)
    server = None
    if not a.no_server and not os.environ.get("PREFECT_API_URL"):
        from sao import config as config_mod
        cfg = config_mod.load(a.config)
        server, url = start_server(a.host, a.port, home=cfg.path(cfg.paths.data_dir) / "prefect")
        os.environ["PREFECT_API_URL"] = url
        print(f"Prefect server: {url[:-4]} (PREFECT_HOME {cfg.path(cfg.paths.data_dir) / 'prefect'})", flush=True)
    if not os.environ.get("PREFECT_API_URL"):
        raise ServeError("--no-server needs PREFECT_API_URL (schedules only fire on a real server)")
    try:
        from prefect import serve
        deployments = runner_deployments(specs, config_path=a.config, cron=a.cron, params=dict(a.param))
        for d, s in zip(deployments, specs):
            print(f"serving {d.name}: {a.cron or ', '.join(x['cron'] for x in s.get('schedules') or [])}", flush=True)
        serve(*deployments)
    finally:
        if server is not None:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
