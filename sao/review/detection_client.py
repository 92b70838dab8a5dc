"""Client for an HTTP content-detection service (submit audio, poll for a verdict).

Errors and timeouts raise DetectionError; the caller keeps the item pending and retries on
a later run, so nothing is lost. The API key is sent in a header and never logged.
"""
from __future__ import annotations

import pathlib

import requests


class DetectionError(RuntimeError):
    pass


class DetectionClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, name: str = "loopback-fingerprint"):
        if not api_key:
            raise DetectionError("no content-detection API key configured ([review].detection_key_env)")
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"DetectionClient({self.base_url!r}, key=***)"

    def _call(self, method: str, path: str, **kw) -> dict:
        try:
            r = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise DetectionError(f"{method} {path}: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", "")
            except ValueError:
                detail = r.text[:200]
            raise DetectionError(f"{method} {path}: HTTP {r.status_code} {detail}")
        try:
            return r.json()
        except ValueError as exc:
            raise DetectionError(f"{method} {path}: response is not JSON") from exc

    def submit(self, audio_path: str | pathlib.Path) -> str:
        data = pathlib.Path(audio_path).read_bytes()
        j = self._call("POST", "/v1/identify", data=data, headers={"Content-Type": "application/octet-stream"})
        if "id" not in j:
            raise DetectionError("submission accepted without a job id")
        return str(j["id"])

    def result(self, ref: str) -> dict:
        return self._call("GET", f"/v1/identify/{ref}")

    def close(self) -> None:
        self.session.close()
