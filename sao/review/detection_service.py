"""A loopback content-detection service, standing in for a commercial identification
service: it fingerprints submitted audio (landmark hashes, sao.analysis.fingerprint)
against a folder of reference tracks declared copyrighted, asynchronously.

    POST /v1/identify            body: audio file bytes      -> 202 {"id", "status": "processing"}
    GET  /v1/identify/<id>                                    -> {"id", "status": "processing" | "done",
                                                                  "verdict": "clear" | "match", "matches": [...]}
Auth: ``Authorization: Bearer <key>``. Faults can be injected (HTTP errors, stalls) for tests.
"""
from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import pathlib
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import soundfile as sf

from ..analysis.fingerprint import FingerprintIndex

log = logging.getLogger(__name__)
AUDIO_EXT = (".wav", ".flac", ".ogg", ".oga", ".mp3")


class DetectionService:
    def __init__(self, reference_dir: str | pathlib.Path | None, *, api_key: str = "sao-demo-detection",
                 host: str = "127.0.0.1", port: int = 0, min_score: int = 20, max_bytes: int = 512 * 1024 * 1024):
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError("the detection service only listens on loopback")
        self.api_key, self.min_score, self.max_bytes = api_key, min_score, max_bytes
        self.index = FingerprintIndex()
        self.jobs: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.faults: list[list] = []          # [pattern, status or "stall", times]
        self.pool = cf.ThreadPoolExecutor(max_workers=2)
        if reference_dir:
            for p in sorted(pathlib.Path(reference_dir).iterdir()):
                if p.suffix.lower() in AUDIO_EXT:
                    x, sr = sf.read(str(p), dtype="float32", always_2d=True)
                    self.index.add(p.stem, x.T, sr)
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.service = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="sao-detection")
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def inject_fault(self, pattern: str, status: int | str, times: int = 1) -> None:
        with self.lock:
            self.faults.append([re.compile(pattern), status, times])

    def take_fault(self, key: str):
        with self.lock:
            for f in self.faults:
                if f[2] > 0 and f[0].search(key):
                    f[2] -= 1
                    return f[1]
        return None

    def _identify(self, job_id: str, data: bytes) -> None:
        try:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            matches = self.index.match(x.T, sr, min_score=self.min_score)
            result = {"status": "done", "verdict": "match" if matches else "clear",
                      "matches": [{"reference": m.reference, "score": m.score,
                                   "offset_seconds": round(m.offset_seconds, 2)} for m in matches],
                      "fingerprinted_seconds": round(len(x) / sr, 2)}
        except Exception as exc:  # noqa: BLE001 - reported to the client as the job's error
            result = {"status": "error", "error": f"cannot analyse the audio: {exc}"}
        with self.lock:
            self.jobs[job_id].update(result)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        log.debug("detection %s", fmt % args)

    @property
    def svc(self) -> DetectionService:
        return self.server.service  # type: ignore[attr-defined]

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guard(self, key: str) -> bool:
        fault = self.svc.take_fault(key)
        if fault == "stall":
            time.sleep(30)
        elif fault is not None:
            self._json(int(fault), {"detail": "injected fault"})
            return False
        if self.headers.get("Authorization", "") != f"Bearer {self.svc.api_key}":
            self._json(401, {"detail": "invalid API key"})
            return False
        return True

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/v1/identify":
            return self._json(404, {"detail": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if 0 < length <= self.svc.max_bytes else b""
        if not self._guard("POST"):
            return None
        if not data:
            return self._json(400, {"detail": "empty or oversized body"})
        job_id = uuid.uuid4().hex
        with self.svc.lock:
            self.svc.jobs[job_id] = {"id": job_id, "status": "processing"}
        self.svc.pool.submit(self.svc._identify, job_id, data)
        return self._json(202, {"id": job_id, "status": "processing"})

    def do_GET(self):  # noqa: N802
        m = re.fullmatch(r"/v1/identify/([0-9a-f]{32})/?", self.path)
        if not m:
            return self._json(404, {"detail": "not found"})
        if not self._guard("GET"):
            return None
        with self.svc.lock:
            job = dict(self.svc.jobs.get(m.group(1)) or {})
        if not job:
            return self._json(404, {"detail": "unknown job"})
        return self._json(200, {"id": m.group(1), **job})


