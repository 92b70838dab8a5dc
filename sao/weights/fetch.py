"""Download the checkpoints of sao.weights.table into a models folder, verified, resumable, recorded.

* A file is written to ``<name>.part`` and renamed to ``<name>`` only after its digest matched: a
  final name always holds verified bytes. A wrong digest deletes the part (a retry starts over).
* An interrupted download resumes: the next request asks for ``Range: bytes=<part size>-`` and appends
  when the server answers 206; a 200 means the server ignored the range, so the part starts over.
* ``weights.lock.json`` in the models folder records each verified file (url, digest, size, when). It is
  rewritten through a temporary file and a rename, under an fcntl lock, so two fetches never mix.
* A Hugging Face token goes only to the Hugging Face endpoint (scheme, host and port equal), never to a
  redirect target elsewhere (the signed CDN URLs need none), and never into a log, error or the lock.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urljoin, urlsplit

from ..log import redact
from . import table
from .lock import (CHUNK, LOCK_NAME, FileStatus, WeightsError, _flock, _record, default_models_dir,  # noqa: F401
                   digest_file, file_status, read_lock, status, with_fetched_weights)
from .table import WeightEntry, WeightFile

log = logging.getLogger(__name__)

MIRROR_ENV = "SAO_WEIGHTS_MIRROR"       # a base URL that replaces every download host (tests, local mirrors)
TOKEN_ENV = "HF_TOKEN"
MAX_REDIRECTS = 10


class _Interrupted(Exception):
    """The transfer stopped early (connection lost or cut short): the part is kept for a resume."""


def mirror_from_env() -> str | None:
    return os.environ.get(MIRROR_ENV, "").strip() or None


def token_allowed(url: str, endpoint: str) -> bool:
    """Whether URL is on the Hugging Face endpoint itself: the same scheme, host and port, nothing looser
    (no subdomain, no other port), so a redirect anywhere else goes without the token."""
    u, e = urlsplit(url), urlsplit(endpoint)
    default = {"http": 80, "https": 443}
    try:
        return (u.scheme == e.scheme and bool(u.hostname) and u.hostname == e.hostname
                and (u.port or default.get(u.scheme)) == (e.port or default.get(e.scheme)))
    except ValueError:                   # a malformed port
        return False


# -- expected digests ------------------------------------------------------------------------------

def parse_expect(e: WeightEntry, values: list[str] | None, files: list[WeightFile]) -> dict[str, str]:
    """--expect values (``FILE=HEX``, or a bare ``HEX`` when only one of FILES has no published digest)
    as {file name: hex}."""
    out: dict[str, str] = {}
    names = {f.name: f for f in e.files}
    for v in values or []:
        name, sep, hexval = v.rpartition("=")
        if not sep:
            unknown = [f for f in files if f.digest is None] or files
            if len(unknown) != 1:
                raise WeightsError(f"weights {e.name!r}: --expect {v!r} must name its file (FILE=HEX): "
                                   f"{len(unknown)} files could take it ({', '.join(f.name for f in unknown)})")
            name = unknown[0].name
        if name not in names:
            raise WeightsError(f"weights {e.name!r}: --expect names {name!r}, not one of its files "
                               f"({', '.join(names)})")
        f = names[name]
        out[name] = table.check_digest(f.digest_kind, hexval, what=f"weights {e.name!r} --expect for {name}")
    return out


def _wanted(e: WeightEntry, f: WeightFile, expect: dict[str, str]) -> tuple[str, str]:
    """(digest, where it came from) the file must match; refuses a file with no digest to trust."""
    given = expect.get(f.name)
    if f.digest is not None:
        if given is not None and given != f.digest:
            raise WeightsError(f"{table.key(e, f)}: --expect {given} differs from the published "
                               f"{f.digest_kind} {f.digest}: refusing both")
        return f.digest, "table"
    if given is None:
        raise WeightsError(f"{table.key(e, f)}: no published {f.digest_kind} digest is known, so the file "
                           f"cannot be trusted: pass --expect {f.name}=<{f.digest_kind} hex> (e.g. from the "
                           "publisher's file page) to check it against that value")
    return given, "--expect"


# -- one download ----------------------------------------------------------------------------------

def _no_netrc(r):
    """An auth hook that adds nothing: passing it stops requests from attaching ~/.netrc credentials,
    so the only Authorization header ever sent is the one set below, for the HF endpoint."""
    return r


def _open(session, url: str, headers: dict, token: str | None, endpoint: str, timeout: float):
    """GET URL following redirects by hand, the token added afresh for each hop whose host is the
    endpoint and left off every other. Returns the final response (streaming)."""
    for _ in range(MAX_REDIRECTS + 1):
        h = dict(headers)
        if token and token_allowed(url, endpoint):
            h["Authorization"] = f"Bearer {token}"
        resp = session.get(url, headers=h, stream=True, allow_redirects=False, timeout=timeout, auth=_no_netrc)
        location = resp.headers.get("location")
        if resp.status_code in (301, 302, 303, 307, 308) and location:
            resp.close()
            url = urljoin(url, location)
            if urlsplit(url).scheme not in ("http", "https"):
                raise WeightsError(f"redirected to a non-HTTP URL {url!r}")
            continue
        return resp
    raise WeightsError(f"more than {MAX_REDIRECTS} redirects")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range 'bytes S-E/T' header (None where absent or '*')."""
    try:
        _, _, rest = (value or "").partition(" ")
        span, _, total = rest.partition("/")
        return int(span.split("-")[0]), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None, None


def _bar(total: int | None, initial: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    disable = not progress or os.environ.get("SAO_NO_PROGRESS") == "1"
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=disable, file=sys.stderr, dynamic_ncols=True, leave=False)


def _transfer(session, url: str, part: pathlib.Path, *, what: str, size: int | None, token: str | None,
              endpoint: str, timeout: float, progress: bool) -> int:
    """Bring PART up to the whole file from URL; returns the bytes received. A lost connection raises
    _Interrupted with the part kept; an HTTP refusal raises WeightsError."""
    import requests
    import urllib3
    offset = part.stat().st_size if part.exists() else 0
    if offset and size is not None and offset >= size:
        return 0                          # already whole (or too long): the digest decides
    # identity: the bytes as published (a gzip encoding would change the digest and break ranges)
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        resp = _open(session, url, headers, token, endpoint, timeout)
    except requests.RequestException as exc:
        raise _Interrupted(f"request failed: {redact(exc, [token])}") from None
    with resp:
        code = resp.status_code
        if code == 416 and offset:
            return 0                      # nothing past the part: it is whole, or the digest says not
        if code in (401, 403):
            raise WeightsError(f"{what}: access refused (HTTP {code}): a gated Hugging Face repo needs its "
                               f"licence accepted on the model page and a token (--token or ${TOKEN_ENV})")
        if code == 404:
            raise WeightsError(f"{what}: not found (HTTP 404) at {url}")
        if code == 429 or code >= 500:    # the server's trouble, likely passing: retried like a lost connection
            raise _Interrupted(f"HTTP {code} from {urlsplit(url).netloc}")
        total = None
        if code == 206 and offset:
            start, total = _content_range(resp.headers.get("content-range"))
            if start != offset:           # not the bytes we asked for: start over next attempt
                part.unlink(missing_ok=True)
                raise _Interrupted(f"the server resumed at byte {start}, not {offset}")
            mode = "ab"
        elif code == 200:
            if offset:
                log.info("%s: the server ignored the range request; downloading from the start", what)
            offset, mode = 0, "wb"
            length = resp.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise WeightsError(f"{what}: HTTP {code} from {urlsplit(url).netloc}")
        total = total or size
        received = 0
        with open(part, mode) as out, _bar(total, offset, what, progress) as bar:
            while True:
                try:                      # raw bytes: a short read returns what came before the cut
                    chunk = resp.raw.read(CHUNK, decode_content=False)
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    raise _Interrupted(f"connection lost after {offset + received} bytes "
                                       f"({type(exc).__name__})") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise WeightsError(f"{what}: cannot write {part}: {exc.strerror or exc}") from None
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and offset + received < total:
        raise _Interrupted(f"the connection closed after {offset + received} of {total} bytes")
    return received


@dataclass
class Fetched:
    key: str
    path: pathlib.Path
    downloaded: int                      # bytes received by this run (0: it was already there)
    seconds: float
    digest_kind: str
    digest: str

    @property
    def rate(self) -> float:
        return self.downloaded / self.seconds if self.seconds > 0 else 0.0


def fetch_file(e: WeightEntry, f: WeightFile, models_dir: str | os.PathLike, *, expect: dict[str, str] | None = None,
               token: str | None = None, mirror: str | None = None, session=None, progress: bool = True,
               retries: int = 3, backoff_s: float = 1.0, timeout: float = 60.0) -> Fetched:
    """Download one file of entry E, verify it and record it in the lock file."""
    import requests
    models_dir = pathlib.Path(models_dir)
    what = table.key(e, f)
    dest = table.file_path(models_dir, e, f)              # UnsafePathError for a name like '../x'
    want, source = _wanted(e, f, expect or {})
    endpoint = mirror or table.HF_ENDPOINT
    url = table.file_url(e, f, mirror=mirror)
    # the token belongs to Hugging Face files only: a Zenodo file served through the mirror gets none
    token = token if e.hf_repo else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    t0 = time.monotonic()
    received = 0
    with (requests.Session() if session is None else contextlib.nullcontext(session)) as session, \
            _flock(dest.with_name(f".{dest.name}.lock"), wait=False, what=what):
        if dest.exists():
            got = digest_file(dest, f.digest_kind)
            if got != want:
                raise WeightsError(f"{what}: {dest} exists but its {f.digest_kind} is {got}, expected {want}: "
                                   "move it away and fetch again")
        else:
            for attempt in range(retries + 1):
                try:
                    received += _transfer(session, url, part, what=what, size=f.size, token=token,
                                          endpoint=endpoint, timeout=timeout, progress=progress)
                    break
                except _Interrupted as exc:
                    have = part.stat().st_size if part.exists() else 0
                    if attempt == retries:
                        kept = (f"{have} bytes are kept in {part.name}: run the same command again to resume"
                                if have else "run the same command again to retry")
                        raise WeightsError(f"{what}: download failed ({exc}); {kept}") from None
                    log.warning("%s: %s; resuming from byte %d (attempt %d of %d)", what, exc, have,
                                attempt + 2, retries + 1)
                    time.sleep(backoff_s * 2 ** attempt)
            got = digest_file(part, f.digest_kind)
            if got != want:
                part.unlink(missing_ok=True)              # a retry starts from zero, not from bad bytes
                raise WeightsError(f"{what}: {f.digest_kind} mismatch for {dest.name}: expected {want}, got "
                                   f"{got}; the download was deleted and nothing was installed")
            os.replace(part, dest)
        st = dest.stat()
        old = read_lock(models_dir).get(what, {})
        _record(models_dir, {what: {
            "name": e.name, "file": f"{e.folder}/{f.name}", "url": url, "digest_kind": f.digest_kind,
            "digest": want, "digest_source": source, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "fetched_at": old.get("fetched_at") if old.get("digest") == want and not received
            else datetime.now(timezone.utc).isoformat(timespec="seconds")}})
    return Fetched(what, dest, received, time.monotonic() - t0, f.digest_kind, want)


def fetch(name: str, models_dir: str | os.PathLike, *, files: list[str] | None = None,
          expect: list[str] | None = None, **kw) -> list[Fetched]:
    """Fetch every file of entry NAME (or only FILES); --expect values as parse_expect takes them."""
    e = table.entry(name)
    chosen = list(e.files)
    if files:
        known = {f.name: f for f in e.files}
        bad = [x for x in files if x not in known]
        if bad:
            raise WeightsError(f"weights {name!r}: no file {bad[0]!r} (its files: {', '.join(known)})")
        chosen = [known[x] for x in files]
    wanted = parse_expect(e, expect, chosen)
    for f in chosen:                     # refuse an untrusted file before any byte is downloaded
        _wanted(e, f, wanted)
    return [fetch_file(e, f, models_dir, expect=wanted, **kw) for f in chosen]
