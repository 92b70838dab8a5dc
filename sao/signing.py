"""Ed25519 signatures for checkpoints and releases: keys, canonical digests, DSSE-signed in-toto statements.

Keys. ``sao keys generate --out DIR`` writes ``DIR/signing.key`` (PKCS#8 PEM, mode 0600) and
``DIR/signing.pub`` (SubjectPublicKeyInfo PEM). The private key is taken from ``--key-file``, else
from ``[signing].key_file``, else from ``$SAO_SIGNING_KEY`` (the PEM text itself when it begins with
``-----BEGIN``, otherwise the path of a PEM file); with none of them nothing is signed and the
outputs say "unsigned". Only the key id (sha256 of the raw 32-byte public key) is ever written to
a manifest, statement, log line or message; the key itself never is, and no error quotes it.

Digests. The weights' digest ``sao-tensors/1`` is a sha256 over the tensors sorted by name, each as
its name, dtype, shape and raw little-endian bytes (every field length-prefixed), so it does not
depend on how safetensors lays out its header and is the same in memory and on disk. JSON is
hashed in its canonical form (sorted keys, no spaces, UTF-8); JSON read back is parsed strictly
(no duplicate keys, no NaN) so that what is hashed is what is used.

Statements. An in-toto Statement v1 (subject: file name and digest) is signed inside a DSSE
envelope (payloadType ``application/vnd.in-toto+json``, signature over the DSSE v1 PAE encoding).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pathlib
import re
import struct
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)

ENV_KEY = "SAO_SIGNING_KEY"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
TENSOR_DIGEST = "sao-tensors/1"
PRIVATE_NAME, PUBLIC_NAME = "signing.key", "signing.pub"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_HEADER = 100 * 1024 * 1024          # safetensors refuses larger headers too


class SigningError(ValueError):
    """A key, signature or signed file is missing or wrong; the message names it and never holds key bytes."""


# -- canonical JSON ------------------------------------------------------------------------------
def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes, what: str) -> Any:
    """Parse JSON read from disk; duplicate keys or NaN would let two readers see different content."""
    if not data.strip():
        raise SigningError(f"{what}: empty file")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise SigningError(f"{what}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SigningError(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise SigningError(f"{what}: not valid JSON ({exc})") from None


# -- tensor digest -------------------------------------------------------------------------------
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _put(h, data: bytes) -> None:
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


def tensor_digest(tensors: Iterable[tuple[str, str, tuple[int, ...], int, Iterable[bytes]]]) -> str:
    """The ``sao-tensors/1`` digest of (name, dtype, shape, nbytes, byte chunks), given in name order."""
    return _digests(tensors, None)[0]


def _digests(tensors, prefix: str | None) -> tuple[str, str | None]:
    """(digest of all the tensors, digest of those named PREFIX... with PREFIX taken off their names, or None
    when there are none): a part of a larger model (a DiT's autoencoder) hashes as it would in a file of its own.
    Both in one pass over the data."""
    full = hashlib.sha256(b"sao-tensors/1\0")
    part = hashlib.sha256(b"sao-tensors/1\0")
    in_part = 0
    last = None
    for name, dtype, shape, nbytes, chunks in tensors:
        if last is not None and name <= last:
            raise SigningError(f"tensor {name!r}: tensors must come sorted by name, once each")
        last = name
        targets = [(full, name)]
        if prefix is not None and name.startswith(prefix):
            targets.append((part, name[len(prefix):]))      # sorted by full name, so sorted by the rest too
            in_part += 1
        for h, n in targets:
            _put(h, n.encode())
            _put(h, dtype.encode())
            h.update(struct.pack("<Q", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape))
            h.update(struct.pack("<Q", nbytes))
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            for h, _ in targets:
                h.update(chunk)
        if seen != nbytes:
            raise SigningError(f"tensor {name!r}: {seen} bytes, expected {nbytes}")
    return full.hexdigest(), (part.hexdigest() if in_part else None)


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str], int]:
    """(tensor entries, metadata, data offset) of a safetensors file, checked as safetensors checks it:
    known dtypes, sizes that match the shapes, data ranges that tile the data section exactly."""
    p = pathlib.Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SigningError(f"{p.name}: not a safetensors file (too short)")
        n = struct.unpack("<Q", head)[0]
        if n > min(MAX_HEADER, size - 8):
            raise SigningError(f"{p.name}: not a safetensors file (header length {n})")
        header = strict_json(f.read(n), f"{p.name} header")
    if not isinstance(header, dict):
        raise SigningError(f"{p.name}: safetensors header is not an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SigningError(f"{p.name}: safetensors metadata must map strings to strings")
    spans = []
    for name, e in header.items():
        ok = (isinstance(e, dict) and e.get("dtype") in DTYPE_SIZES and isinstance(e.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in e["shape"])
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in e["data_offsets"]))
        if not ok:
            raise SigningError(f"{p.name}: tensor {name!r} has a malformed header entry")
        start, end = e["data_offsets"]
        count = 1
        for d in e["shape"]:
            count *= d
        if end - start != count * DTYPE_SIZES[e["dtype"]]:
            raise SigningError(f"{p.name}: tensor {name!r}: {end - start} bytes do not fit shape {e['shape']}")
        spans.append((start, end, name))
    pos = 0
    for start, end, name in sorted(spans):
        if start != pos:
            raise SigningError(f"{p.name}: tensor {name!r} overlaps another or leaves a gap")
        pos = end
    if 8 + n + pos != size:
        raise SigningError(f"{p.name}: the data section is {size - 8 - n} bytes, the tensors claim {pos}")
    return header, meta, 8 + n


def safetensors_digest(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """(``sao-tensors/1`` digest, metadata) of a safetensors file, reading its data once."""
    digest, meta, _ = safetensors_digests(path, None)
    return digest, meta


def safetensors_digests(path: str | os.PathLike, prefix: str | None) -> tuple[str, dict[str, str], str | None]:
    """(digest, metadata, digest of the tensors under PREFIX with it taken off, or None) of a safetensors file,
    reading its data once."""
    header, meta, base = read_safetensors_header(path)

    def chunks(f, start: int, end: int) -> Iterator[bytes]:
        f.seek(base + start)
        left = end - start
        while left:
            block = f.read(min(left, 1 << 22))
            if not block:
                return
            left -= len(block)
            yield block

    with open(path, "rb") as f:
        entries = ((name, header[name]["dtype"], tuple(header[name]["shape"]),
                    header[name]["data_offsets"][1] - header[name]["data_offsets"][0],
                    chunks(f, *header[name]["data_offsets"])) for name in sorted(header))
        digest, part = _digests(entries, prefix)
        return digest, meta, part


# -- keys ----------------------------------------------------------------------------------------
def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return serialization, ed25519


def keyid(public_key) -> str:
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keys(out_dir: str | os.PathLike) -> dict[str, str]:
    """A new key pair in OUT_DIR (refuses to replace an existing key: signatures made with it would orphan)."""
    serialization, ed25519 = _crypto()
    out = pathlib.Path(out_dir)
    priv, pub = out / PRIVATE_NAME, out / PUBLIC_NAME
    for p in (priv, pub):
        if p.exists():
            raise SigningError(f"{p} already exists: not replaced (move it away to make a new key)")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = out / f".{PRIVATE_NAME}.{os.getpid()}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)     # never readable by others, even briefly
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, priv)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_public_key(key.public_key(), pub)
    return {"private": str(priv), "public": str(pub), "keyid": keyid(key.public_key())}


def write_public_key(public_key, path: str | os.PathLike) -> None:
    serialization, _ = _crypto()
    from .fsutil import atomic_path
    with atomic_path(path) as t:
        t.write_bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _private_from_pem(data: bytes, where: str):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):        # the library's message is not quoted: it could echo key material
        raise SigningError(f"{where}: not an unencrypted PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{where}: not an ed25519 key")
    return key


def load_private_key(path: str | os.PathLike):
    p = pathlib.Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise SigningError(f"signing key {p}: no such file")
    if os.name == "posix" and p.stat().st_mode & 0o077:
        log.warning("signing key %s is readable by other users (mode %o): chmod 600 it", p, p.stat().st_mode & 0o777)
    return _private_from_pem(p.read_bytes(), f"signing key {p}")


def key_file_for(cfg, key_file: str | None = None) -> str | None:
    """--key-file, else [signing].key_file (relative to the config's folder), else None."""
    if key_file:
        return key_file
    return str(cfg.path(cfg.signing.key_file)) if cfg.signing.key_file else None


def load_signing_key(key_file: str | None = None):
    """The private key in KEY_FILE, else in $SAO_SIGNING_KEY (PEM text or a path), else None (unsigned)."""
    if key_file:
        return load_private_key(key_file)
    value = os.environ.get(ENV_KEY, "").strip()
    if not value:
        return None
    if value.startswith("-----BEGIN"):
        return _private_from_pem(value.encode(), f"${ENV_KEY}")
    return load_private_key(value)


def secret_texts(key_file: str | None = None) -> list[str]:
    """The private key's PEM text and its base64 lines (from KEY_FILE and $SAO_SIGNING_KEY), for redaction."""
    texts = []
    value = os.environ.get(ENV_KEY, "").strip()
    paths = [key_file] if key_file else []
    if value.startswith("-----BEGIN"):
        texts.append(value)
    elif value:
        paths.append(value)
    for p in paths:
        try:
            texts.append(pathlib.Path(os.path.expanduser(p)).read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError):
            continue
    lines = [ln.strip() for t in texts for ln in t.splitlines() if ln.strip() and not ln.startswith("-----")]
    return texts + [ln for ln in lines if len(ln) >= 16]


def load_public_key(path: str | os.PathLike):
    serialization, ed25519 = _crypto()
    p = pathlib.Path(path)
    if not p.is_file():
        raise SigningError(f"public key {p}: no such file")
    data = p.read_bytes()
    if b"PRIVATE KEY" in data:
        raise SigningError(f"{p} is a private key: pass the public key ({PUBLIC_NAME}) to verify")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SigningError(f"public key {p}: not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningError(f"public key {p}: not an ed25519 key")
    return key


# -- DSSE envelopes of in-toto statements --------------------------------------------------------
def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers (type and body, length-prefixed)."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def statement(subjects: list[tuple[str, str]], predicate_type: str, predicate: dict) -> dict:
    return {"_type": STATEMENT_TYPE, "subject": [{"name": n, "digest": {"sha256": d}} for n, d in subjects],
            "predicateType": predicate_type, "predicate": predicate}


def sign_statement(stmt: dict, key) -> dict:
    payload = canonical_json(stmt)
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}]}


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SigningError(f"{what}: missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise SigningError(f"{what}: not base64") from None


def open_envelope(path: str | os.PathLike, public_key, predicate_type: str) -> dict:
    """The statement inside the DSSE envelope at PATH once a signature by PUBLIC_KEY verifies."""
    from cryptography.exceptions import InvalidSignature
    p = pathlib.Path(path)
    if not p.is_file():
        raise SigningError(f"unsigned: no signature envelope {p.name}")
    env = strict_json(p.read_bytes(), p.name)
    if not isinstance(env, dict):
        raise SigningError(f"{p.name}: not a DSSE envelope (not an object)")
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise SigningError(f"{p.name}: payloadType {env.get('payloadType')!r} is not {PAYLOAD_TYPE}")
    payload = _b64(env.get("payload"), f"{p.name}: payload")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise SigningError(f"unsigned: {p.name} holds no signature")
    want = keyid(public_key)
    for i, s in enumerate(sigs):
        if not isinstance(s, dict):
            raise SigningError(f"{p.name}: signatures[{i}] is not an object")
        try:
            public_key.verify(_b64(s.get("sig"), f"{p.name}: signatures[{i}].sig"), pae(PAYLOAD_TYPE, payload))
            break
        except InvalidSignature:
            continue
    else:
        raise SigningError(f"{p.name}: no signature verifies with key {want[:16]} (wrong key, or the statement "
                           "was altered after signing)")
    stmt = strict_json(payload, f"{p.name}: payload")
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise SigningError(f"{p.name}: the payload is not an in-toto Statement v1")
    if stmt.get("predicateType") != predicate_type:
        raise SigningError(f"{p.name}: predicateType {stmt.get('predicateType')!r} is not {predicate_type}")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
            and isinstance(s["digest"].get("sha256"), str) for s in subjects) or not subjects:
        raise SigningError(f"{p.name}: the statement's subject must list names with sha256 digests")
    if not isinstance(stmt.get("predicate"), dict):
        raise SigningError(f"{p.name}: the statement has no predicate object")
    return stmt


def write_envelope(path: str | os.PathLike, envelope: dict) -> None:
    from .fsutil import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(envelope, indent=1, sort_keys=True) + "\n")
