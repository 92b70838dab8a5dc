"""Signed releases: a DSSE-signed in-toto statement over a release's content sha256.

The statement's subject is ``release/NAME`` with digest ``{"sha256": content sha256}`` (the
``sao.attribution.policy.content_sha256`` of its items); it is written at creation to
``[paths].releases/NAME.intoto.json``, beside the release's report folder ``NAME/`` (a rebuilt
report replaces the folder, never the signature). ``verify_release`` recomputes the sha256 from the
release's items in the catalogue, so items changed after creation fail even where the recorded
sha256 was rewritten to match, and compares every field of the signed predicate (name, version,
recordings, required stages, config hash, creation time, model use) with the catalogue's ``releases`` row.
"""
from __future__ import annotations

import pathlib
from typing import Any

from .. import signing
from ..catalog import Catalog
from . import policy
from .release import check_name, get_release, release_items

PREDICATE_TYPE = "https://sao.invalid/attestation/release/v1"


def signature_path(releases_root: str | pathlib.Path, name: str) -> pathlib.Path:
    return pathlib.Path(releases_root) / f"{check_name(name)}.intoto.json"


def release_statement(rel: dict[str, Any]) -> dict:
    return signing.statement(
        [(f"release/{rel['name']}", rel["content_sha256"])], PREDICATE_TYPE,
        {"digest_method": "sao-release-items/2", "name": rel["name"], "version": rel.get("version"),
         "recordings": rel.get("n_recordings"), "required_stages": list(rel.get("required_stages") or []),
         "config_hash": rel.get("config_hash"), "created_at": str(rel.get("created_at")),
         # what the release may train (sao.licensing.model_use); None for releases made before it was recorded,
         # whose signatures have no such field and so still verify
         "model_use": rel.get("model_use")})


def after_create(cat: Catalog, out: dict[str, Any], releases_root: str | pathlib.Path, key) -> dict[str, Any]:
    """Sign release OUT["name"] with KEY; without a key, a new release leaves no older signature standing."""
    path = signature_path(releases_root, out["name"])
    if key is None:
        if out["status"] == "created":           # a file left from other content under this name would mislead
            path.unlink(missing_ok=True)
        out["signature"] = None
        return out
    signing.write_envelope(path, signing.sign_statement(release_statement(get_release(cat, out["name"])), key))
    out["signature"] = str(path)
    out["signed_by"] = signing.keyid(key.public_key())
    return out


def verify_release(cat: Catalog, name: str, releases_root: str | pathlib.Path, public_key) -> dict[str, Any]:
    """Raise SigningError unless the release's items, its ``releases`` row and the signed statement agree."""
    rel = get_release(cat, name)
    items = release_items(cat, name)
    sha = policy.content_sha256(items.values())
    if sha != rel["content_sha256"]:
        raise signing.SigningError(f"release {name}: its items hash to {sha[:16]}, not the recorded "
                                   f"{rel['content_sha256'][:16]}: changed after creation")
    if len(items) != rel["n_recordings"]:
        raise signing.SigningError(f"release {name}: {len(items)} items, but the release records "
                                   f"{rel['n_recordings']} recordings: changed after creation")
    path = signature_path(releases_root, name)
    stmt = signing.open_envelope(path, public_key, PREDICATE_TYPE)
    if not any(s["name"] == f"release/{name}" and s["digest"]["sha256"] == sha for s in stmt["subject"]):
        raise signing.SigningError(f"release {name}: {path.name} signs other content, not sha256 {sha[:16]}")
    # what the signature says about the release (its predicate) must be what the catalogue says now
    want, signed = release_statement(rel)["predicate"], stmt["predicate"]
    changed = [f"{k} (signed {_short(signed.get(k))}, catalogue {_short(want.get(k))})"
               for k in sorted(want.keys() | signed.keys()) if want.get(k) != signed.get(k)]
    if changed:
        raise signing.SigningError(f"release {name}: the catalogue differs from {path.name} in "
                                   f"{'; '.join(changed)}: changed after signing")
    return {"release": name, "content_sha256": sha, "signature": str(path), "signed_by": signing.keyid(public_key),
            "recordings": len(items)}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
