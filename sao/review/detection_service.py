"""A loopback content-detection service, standing in for a commercial identification
service: it fingerprints submitted audio (landmark hashes, sao.analysis.fingerprint)
against a folder of reference tracks declared copyrighted, asynchronously.

    POST /v1/identify            body: audio file bytes      -> 202 {"id", "status": "processing"}
    GET  /v1/identify/<id>                                    -> {"id", "status": "processing" | "done",
                                                                  "verdict": "clear" | "match", "matches": [...]}
Auth: ``Authorization: Bearer <key>``, required (there is no default key), compared in constant
time and checked before any of the body is read; the body must announce its Content-Length, at
most ``max_bytes``. Faults can be injected (HTTP errors, stalls) for tests.
"""
from __future__ import annotations

import concurrent.futures as cf
import hmac
import io
import json
import logging
import pathlib
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

import soundfile as sf

from ..analysis.fingerprint import FingerprintIndex
from ..log import QuietHTTPServer

log = logging.getLogger(__name__)
AUDIO_EXT = (".wav", ".flac", ".ogg", ".oga", ".mp3")


class DetectionService:
    def __init__(self, reference_dir: str | pathlib.Path | None, *, api_key: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, min_score: int = 20, max_bytes: int = 512 * 1024 * 1024):
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError("the detection service only listens on loopback")
        # no default key: a service anyone can call with a published demo key is no gate at all
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("the detection service needs an API key (none given): set the variable named by "
                             "[review].detection_key_env, e.g. SAO_DETECTION_API_KEY")
        self._expected = f"Bearer {api_key}".encode()
        self.min_score, self.max_bytes = min_score, max_bytes
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
        self.httpd = QuietHTTPServer((host, port), _Handler)
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
    timeout = 60                       # a client that announces a body and stalls cannot hold a thread forever

    def log_message(self, fmt, *args):
        log.debug("detection %s", fmt % args)

    @property
    def svc(self) -> DetectionService:
        return self.server.service  # type: ignore[attr-defined]

    def _json(self, status: int, body: dict, *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:                      # an unread body must not be parsed as the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _guard(self, key: str, *, close: bool = False) -> bool:
        """Faults, then the key; before any body is read (``close``: a body may be waiting unread)."""
        fault = self.svc.take_fault(key)
        if fault == "stall":
            time.sleep(30)
        elif fault is not None:
            self._json(int(fault), {"detail": "injected fault"}, close=close)
            return False
        got = self.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(got, self.svc._expected):
            self._json(401, {"detail": "invalid API key"}, close=close)
            return False
        return True

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/v1/identify":
            return self._json(404, {"detail": "not found"}, close=True)
        if not self._guard("POST", close=True):
            return None
        raw = self.headers.get("Content-Length")
        if raw is None or not re.fullmatch(r"[0-9]{1,15}", raw.strip()):
            return self._json(411, {"detail": "a Content-Length is required"}, close=True)
        length = int(raw)
        if length > self.svc.max_bytes:
            return self._json(413, {"detail": f"body of {length} bytes is over the limit of {self.svc.max_bytes}"},
                              close=True)
        data = self.rfile.read(length) if length else b""
        if len(data) < length or not data:
            return self._json(400, {"detail": "empty or truncated body"}, close=True)
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


