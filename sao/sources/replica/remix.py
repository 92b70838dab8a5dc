"""The replica's one web-site page: a sound's attribution modal, where freesound.org gives out a
remix's sources (APIv2 has no field or endpoint for them).

Written from MTG/freesound: ``sounds.views.attribution_modal`` (``/people/<username>/sounds/<id>/attribution/``;
without ``?ajax=1`` a redirect to the sound page with ``?attribution=1``; the sound by id alone, the
username unchecked; 404 for an unknown id), the template ``sounds/modal_attribution.html`` inside
``molecules/modal_base.html``, and ``Sound.attribution_texts`` (plain text, HTML and JSON; a remix
appends each source's texts, recursively, sources in the model's order, newest ``created`` first).
A sound's sources are its internal ``_sources`` ids; a sound that names itself through its sources
makes the real server recurse without end, so the replica answers 500 there too.
"""
from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ...licensing import canonical_license
from ...licensing.attribution import license_name_with_version

if TYPE_CHECKING:
    from .handler import _Handler

_ATTRIBUTION = re.compile(r"^/people/([^/]+)/sounds/(\d+)/attribution/$")


class _Recursion(Exception):
    pass


def attribution_texts(sounds: dict[int, dict[str, Any]], sid: int, site: str, _path: tuple = ()) -> dict[str, str]:
    """``Sound.attribution_texts`` of one replica sound: {'plain_text', 'html', 'json'}."""
    if sid in _path:
        raise _Recursion(sid)
    s = sounds[sid]
    site = site.rstrip("/")
    user, name = s["username"], s["name"]
    lic = canonical_license(s.get("license"))
    lic_name = license_name_with_version(lic)
    lic_url = s.get("license") or ""
    sound_url = f"{site}/people/{quote(user)}/sounds/{sid}/"
    author_url = f"{site}/people/{quote(user)}/"
    texts = {
        "plain_text": f"{name} by {user} -- {site}/s/{sid}/ -- License: {lic_name}",
        "html": f'<a href="{sound_url}">{name}</a> by <a href="{author_url}">{user}</a> | '
                f'License: <a href="{lic_url}">{lic_name}</a>',
        "json": json.dumps({"sound_url": sound_url, "sound_name": name, "author_url": author_url,
                            "author_name": user, "license_url": lic_url, "license_name": lic_name}),
    }
    sources = sorted((sounds[i] for i in dict.fromkeys(s.get("_sources") or ()) if i in sounds),
                     key=lambda x: x.get("created") or "", reverse=True)
    if not sources:
        return texts
    subs = [attribution_texts(sounds, x["id"], site, _path + (sid,)) for x in sources]
    return {
        "plain_text": "\n\n".join([texts["plain_text"]] + [t["plain_text"] for t in subs]),
        "html": "<br>\n".join([texts["html"]] + [t["html"] for t in subs]),
        "json": json.dumps([json.loads(texts["json"])] + [json.loads(t["json"]) for t in subs]),
    }


def attribution_modal(texts: dict[str, str]) -> str:
    """``sounds/modal_attribution.html`` in ``molecules/modal_base.html`` (``|safe|force_escape``)."""
    esc = lambda v: html.escape(v, quote=True)  # noqa: E731 - Django's escape: & < > " '
    return f"""
<div class="modal " id="soundAttributionModal" tabindex="-1" role="dialog" aria-label="Get attribution text" aria-hidden="true">
    <div class="modal-wrapper">
        <div class="modal-dialog modal-dialog-centered">
            <div class="modal-content">
                <div class="modal-header">
                    <span class="close" data-dismiss="modal" aria-label="Close">
                        <span class="bw-icon-close"></span>
                    </span>
                </div>
                <div class="modal-body">
<div class="col-12">
    <div class="text-center">
        <h4 class="v-spacing-5">Get attribution text</h4>
    </div>
    <div class="v-spacing-4">
        <div class="bw-form">
            <div>
                Format:
                <select>
                    <option value="{esc(texts['plain_text'])}">Plain text</option>
                    <option value="{esc(texts['html'])}">HTML</option>
                    <option value="{esc(texts['json'])}">JSON</option>
                </select>
            </div>
            <textarea></textarea>
        </div>
        <button class="btn-primary v-spacing-top-1 w-100">Copy text</button>
    </div>
</div>
                </div>
                <div class="modal-footer">
                </div>
                <div class="modal-extra-info">
                </div>
            </div>
        </div>
    </div>
</div>
"""


def _page(handler: "_Handler", status: int, body: str, headers: dict[str, str] | None = None) -> None:
    data = body.encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


def serve_people_page(handler: "_Handler", path: str, params: dict[str, list[str]]) -> None:
    """``/people/...``: the attribution modal; every other site page is a 404 here."""
    r = handler.replica
    m = _ATTRIBUTION.match(path)
    if m is None:
        return _page(handler, 404, "<h1>Not Found</h1>")
    username, sid = m.group(1), int(m.group(2))
    if not params.get("ajax", [""])[0]:
        return _page(handler, 302, "", {"Location": f"/people/{username}/sounds/{sid}/?attribution=1"})
    sounds = {s["id"]: s for s in r.sounds()}
    if sid not in sounds:
        return _page(handler, 404, "<h1>Not Found</h1>")
    try:
        texts = attribution_texts(sounds, sid, r.settings.page_site or r.base_url)
    except _Recursion:
        return _page(handler, 500, "<h1>Server Error (500)</h1>")
    return _page(handler, 200, attribution_modal(texts))
