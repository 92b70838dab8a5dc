"""Integrity holes of the reports, the detection service, the copyright catalogue, dedup, embed,
the catalogue lock and `python -m sao`: each test reproduces one hole."""
import datetime as dt
import hmac
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sao import cli
from sao.catalog import Catalog, CatalogError, Decision

from .conftest import REPO, chromium_dom, mark_probed

NOW = dt.datetime(2026, 1, 1)
HOSTILE_URLS = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
                "\x01javascript:alert(1)", "data:text/html,<b>x</b>", "vbscript:msgbox(1)", "//evil.example/x",
                "http:javascript:alert(1)", "https://[bad"]
GOOD_URLS = ["https://freesound.org/s/1/", "HTTP://Example.org/a?b=1&c=2", "  https://example.org/x  "]
TITLE = 'x <!--<script> </script> & > \u2028 \u2029 "q"'


# --- 1. only http(s) URLs become links ------------------------------------------------------------------------------

def test_link_url_is_an_exact_http_https_allow_list():
    from sao.attribution.report import link_url
    for u in HOSTILE_URLS + ["", None, 12, "ftp://x.org/", "mailto:a@b", "https:", "https:///x"]:
        assert link_url(u) is None, u
    assert link_url(GOOD_URLS[0]) == GOOD_URLS[0]
    assert link_url(GOOD_URLS[1]) == GOOD_URLS[1]
    assert link_url(GOOD_URLS[2]) == "https://example.org/x"


def _report(tmp_path, urls, titles=None):
    from sao.attribution.release import create_release
    from sao.attribution.report import build_report
    titles = titles or [f"t{i}" for i in range(len(urls))]
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([dict(source="freesound", source_id=str(i + 1), title=t, author="A", duration=2.0,
                                    sample_rate=44100, channels=1, license_raw="Creative Commons 0",
                                    license_canonical="cc0-1.0", page_url=u, crawl_time=NOW,
                                    content_sha256=f"{i + 1:064x}", audio_path=f"{i + 1}.wav")
                               for i, (u, t) in enumerate(zip(urls, titles))])
        cat.add_decisions([Decision(f"freesound:{i + 1}", stage, "pass", "ok", config_hash="t",
                                    details={"content_sha256": f"{i + 1:064x}"})
                           for i in range(len(urls)) for stage in ("license_gate", "decode")])
        mark_probed(cat)
        create_release(cat, "r1", required_stages=["license_gate"])
        out = build_report(cat, "r1", tmp_path / "releases")
    return pathlib.Path(out["html"]), out


def _works(page_path: pathlib.Path) -> list[dict]:
    """Every work the report's sidecar parts hold, as the page reads them."""
    from sao.attribution.report_works import read_part
    parts = sorted((page_path.parent / "works").glob("part-*.js"))
    assert parts, "no works sidecar parts"
    return [w for p in parts for w in read_part(p)[1]]


def test_report_links_only_http_urls_in_html_and_in_the_data_the_page_script_links(tmp_path):
    urls = HOSTILE_URLS + GOOD_URLS
    page_path, _ = _report(tmp_path, urls)
    page = page_path.read_text(encoding="utf-8")
    by_id = {w["id"]: w for w in _works(page_path)}
    for i, u in enumerate(urls):
        row = by_id[f"freesound:{i + 1}"]
        # the page script makes a link only from the link field: the allowed URL, or none (the URL stays text)
        assert row["url"] == u.replace("\t", " ") and row["link"] == (u.strip() if u in GOOD_URLS else None), (u, row)
    parts = "".join(p.read_text(encoding="utf-8") for p in (page_path.parent / "works").glob("*.js"))
    for text in (page, parts):
        assert not re.search(r"href=[\"']?\s*(javascript|vbscript|data):", text, re.I)
    # the script builds hrefs from the vetted field only (never from a URL the link field does not vouch for)
    assert "f.href = flag === '1' ? f[4] : flag === '2' &&" in page and 'href="${esc(f.href)}"' in page


def test_memorization_page_links_only_http_urls(tmp_path):
    from sao.dedup.memorization import write_report
    src = tmp_path / "a.wav"
    src.write_bytes(b"RIFF")
    urls = HOSTILE_URLS + GOOD_URLS
    cands = [{"path": str(src), "score": 0.9, "neighbours": [
        {"similarity": 0.9, "recording_id": f"freesound:{i}", "path": str(src),
         "attribution": {"title": "t", "author": "a", "license": "cc0-1.0", "source_url": u}}]}
        for i, u in enumerate(urls)]
    page = write_report(tmp_path / "out", cands, model_note="n").read_text(encoding="utf-8")
    hrefs = re.findall(r"<a href='([^']*)'", page)
    assert hrefs == ["https://freesound.org/s/1/", "HTTP://Example.org/a?b=1&amp;c=2", "https://example.org/x"]
    assert not re.search(r"href=[\"']?\s*(javascript|vbscript|data|java)", page, re.I)


# --- 2. JSON inside <script> cannot end or re-open the element -------------------------------------------------------

def test_report_json_escapes_script_breaking_sequences(tmp_path):
    page_path, _ = _report(tmp_path, ["https://a.org/1", "https://a.org/2"], titles=[TITLE, "plain"])
    page = page_path.read_text(encoding="utf-8")
    index = re.search(r'<script id="works-index" type="application/json">(.*?)</script>', page, re.S).group(1)
    data = "".join(p.read_text(encoding="utf-8") for p in (page_path.parent / "works").glob("*.js"))
    for text in (index, data):
        for bad in ("<", ">", "&", "\u2028", "\u2029"):
            assert bad not in text, bad
    assert "\\u003c!--\\u003cscript\\u003e" in data
    assert TITLE in [w["title"] for w in _works(page_path)]
    # exactly the page's own two script elements
    assert len(re.findall(r"<script", page, re.I)) == 2 and len(re.findall(r"</script", page, re.I)) == 2


def test_report_rows_render_in_headless_chromium_despite_hostile_title_and_urls(tmp_path):
    urls = HOSTILE_URLS + GOOD_URLS
    titles = [TITLE] + [f"t{i}" for i in range(1, len(urls))]
    page_path, out = _report(tmp_path, urls, titles)
    dom = chromium_dom(page_path.as_uri(), tmp_path / "prof", "--virtual-time-budget=5000")
    assert f'data-matches="{len(urls)}"' in dom
    rows = dict(re.findall(r'<tr data-id="([^"$]+)">(.*?)</tr>', dom, re.S))  # rendered rows, not the script
    assert len(rows) == len(urls) == out["recordings"]
    assert "&lt;!--&lt;script&gt;" in rows["freesound:1"]
    for i, u in enumerate(urls):
        anchors = re.findall(r'<a href="([^"]*)"', rows[f"freesound:{i + 1}"])
        assert anchors == ([u.strip().replace("&", "&amp;")] if u in GOOD_URLS else []), (u, anchors)


# --- 3. the detection service: a key required, checked first, bounded body, constant time -------------------------

def test_detection_service_refuses_to_start_without_a_key():
    from sao.review.detection_service import DetectionService
    for kw in ({}, {"api_key": ""}, {"api_key": None}, {"api_key": "  "}):
        with pytest.raises(ValueError, match="API key"):
            DetectionService(None, **kw)


def test_serve_detection_cli_without_a_key_exits_2_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SAO_DETECTION_API_KEY"}
    cfgfile = tmp_path / "sao.toml"
    cfgfile.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n')
    r = subprocess.run([sys.executable, "-m", "sao.cli", "--config", str(cfgfile), "review", "serve-detection"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "SAO_DETECTION_API_KEY" in r.stderr and "sao-demo" not in r.stderr + r.stdout


def _raw(url, request: bytes, timeout=5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_detection_key_is_checked_before_the_body_and_the_body_is_bounded(monkeypatch):
    from sao.review import detection_service
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(detection_service.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    with detection_service.DetectionService(None, api_key="k-123", max_bytes=1000) as svc:
        # a wrong key with a huge announced body that never comes: refused at once, nothing read
        t = time.monotonic()
        got = _raw(svc.url, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                            b"Content-Length: 100000000\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 401") and time.monotonic() - t < 3 and calls
        got = _raw(svc.url, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-123\r\n"
                            b"Content-Length: 100000000\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 413")
        got = _raw(svc.url, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-123\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 411")
        got = _raw(svc.url, b"GET /v1/identify/" + b"0" * 32 + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Authorization: Bearer k-1234\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 401")


# --- 4. no demo copyright catalogue as a production default -------------------------------------------------------

def test_no_demo_copyright_catalogue_by_default_and_fma_review_fails_loudly_without_one(tmp_path):
    from sao.config import Config
    from sao.review.stage import run_fma_review
    assert "sample" not in Config().review.copyright_catalogue
    assert Config().review.copyright_catalogue == ""
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert run_fma_review(cat, config_hash="t")["checked"] == 0          # nothing to match: no catalogue needed
        cat.upsert_recordings([dict(source="fma", source_id="2", title="Call me", author="X", crawl_time=NOW,
                                    license_raw="http://creativecommons.org/licenses/by/3.0/", audio_path="2.mp3")])
        cat.add_decisions([Decision("fma:2", "license_gate", "pass", "ok", config_hash="t")])
        with pytest.raises(CatalogError, match=r"no copyright catalogue.*\[review\]\.copyright_catalogue"):
            run_fma_review(cat, config_hash="t")
        assert cat.latest_decision_map("copyright_review") == {}               # nothing passed unchecked
    # in a pipeline run the track stays pending and the stage names why; asked for by name, it is an error
    from sao import cli
    from sao import config as config_mod
    from tests.conftest import run_stage
    cfg_file = tmp_path / "sao.toml"
    cfg_file.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n')
    st = run_stage(config_mod.load(cfg_file), "copyright_review")
    assert "no copyright catalogue loaded" in st.errors["catalogue match"]
    assert cli.main(["--config", str(cfg_file), "review", "run"]) == 1
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert cat.latest_decision_map("copyright_review") == {}


def test_demo_configures_the_sample_catalogue_explicitly():
    from sao import demo
    assert demo.DEMO_COPYRIGHT_CATALOGUE.is_file() and demo.DEMO_COPYRIGHT_CATALOGUE.name == "sample.csv"


# --- 5. every dedup decision names the model that made it -------------------------------------------------------------

def _dedup_rows(cat):
    return {r["recording_id"]: r for r in cat.latest_decisions("dedup")}


def _dedup_catalogue(tmp_path, corpus_entries):
    """dog and dog-copy: the same audio; fma:2 and frog distinct. Gate-admitted and decoded."""
    by = {e["id"]: e for e in corpus_entries}
    cat = Catalog(tmp_path / "c.duckdb")
    specs = [("freesound", "dog", "ovos-dog", "cc0-1.0"), ("freesound", "dog-copy", "ovos-dog", "cc-by-3.0"),
             ("fma", "2", "fma-vibe-ace", "cc-by-3.0"), ("freesound", "frog", "ovos-frog", "cc0-1.0")]
    cat.upsert_recordings([dict(source=src, source_id=sid, title=by[e]["title"], author=by[e]["author"],
                                license_raw=lic, license_canonical=lic, crawl_time=NOW, content_sha256=by[e]["sha256"],
                                md5=by[e]["md5"], audio_path=pathlib.Path(by[e]["path"]).name)
                           for src, sid, e, lic in specs])
    cat.add_decisions([Decision(f"{src}:{sid}", stage, "pass", "ok", config_hash="t",
                                details={"content_sha256": by[e]["sha256"]})
                       for src, sid, e, _ in specs for stage in ("license_gate", "decode")])
    mark_probed(cat)
    return cat


def test_dedup_decisions_record_model_checkpoint_threshold_and_say_when_unchecked(tmp_path, corpus_entries):
    from sao.dedup.stage import run_dedup
    from sao.dedup.store import append_embeddings

    from .test_dedup import constructed
    cat = _dedup_catalogue(tmp_path, corpus_entries)
    with cat:
        # no CLAP model at all: exact copies only
        run_dedup(cat, embeddings_dir=tmp_path / "emb", signature=None, threshold=0.95, config_hash="t")
        rows = _dedup_rows(cat)
        assert rows["freesound:frog"]["reason"] == "unique-exact-only (near-replicas unchecked: no CLAP model)"
        assert "near-replicas unchecked" in rows["freesound:dog"]["reason"]          # the kept one of the exact pair
        assert rows["freesound:dog-copy"]["reason"] == "duplicate-of: freesound:dog (identical audio)"
        assert all(r["model_name"] and r["uncalibrated"] and r["threshold"] == 0.95 for r in rows.values())
        # uncalibrated CLAP embeddings
        recs = cat.query("SELECT recording_id, content_sha256 FROM recordings ORDER BY recording_id")
        x = constructed()
        append_embeddings(tmp_path / "emb", "sig-u", {r["content_sha256"]: x[i] for i, r in enumerate(recs)}, {},
                          "test", None)
        out = run_dedup(cat, embeddings_dir=tmp_path / "emb", signature="sig-u", threshold=0.95, config_hash="t",
                        model_name="CLAP HTSAT-tiny", uncalibrated=True)
        assert out["decisions_written"] == 4                                      # the model changed: new decisions
        rows = _dedup_rows(cat)
        assert rows["freesound:frog"]["reason"] == "unique-exact-only (near-replicas unchecked: CLAP uncalibrated)"
        assert all(r["model_name"] == "CLAP HTSAT-tiny" and r["uncalibrated"] and r["checkpoint_sha256"] is None
                   and r["threshold"] == 0.95 for r in rows.values())
        # a calibrated checkpoint
        append_embeddings(tmp_path / "emb", "sig-c", {r["content_sha256"]: x[i] for i, r in enumerate(recs)}, {},
                          "test", "c" * 64)
        run_dedup(cat, embeddings_dir=tmp_path / "emb", signature="sig-c", threshold=0.95, config_hash="t",
                  model_name="CLAP HTSAT-tiny", checkpoint_sha256="c" * 64)
        rows = _dedup_rows(cat)
        assert rows["freesound:frog"]["reason"] == "unique: no repeated recording found"
        assert rows["freesound:dog"]["reason"] == "kept: representative of 2 repeated recordings"
        assert all(r["checkpoint_sha256"] == "c" * 64 and not r["uncalibrated"] for r in rows.values())
        again = run_dedup(cat, embeddings_dir=tmp_path / "emb", signature="sig-c", threshold=0.95, config_hash="t",
                          model_name="CLAP HTSAT-tiny", checkpoint_sha256="c" * 64)
        assert again["decisions_written"] == 0


# --- 6. `sao embed` names and records undecodable files ------------------------------------------------------------

class _FakeClapModule:
    def get_audio_embedding_from_data(self, x, use_tensor=False):
        return np.ones((len(x), 512), np.float32)


def test_embed_names_and_records_undecodable_files(tmp_path, corpus_entries, capsys, monkeypatch):
    from sao.analysis.clap import ClapModel
    from sao.pipeline.stages import embed as embed_stage
    import torch
    good = next(e for e in corpus_entries if e["id"] == "kenney-laser1-wav")
    store = tmp_path / "audio"
    store.mkdir()
    shutil.copyfile(good["path"], store / "good.wav")
    (store / "bad.mp3").write_bytes(b"\x00not audio at all" * 100)
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([dict(source="freesound", source_id=sid, title=sid, author="A", crawl_time=NOW,
                                    license_raw="Creative Commons 0", license_canonical="cc0-1.0",
                                    content_sha256=sha, audio_path=name)
                               for sid, sha, name in (("1", good["sha256"], "good.wav"), ("2", "b" * 64, "bad.mp3"))])
        # both passed the decode stage; the second file broke afterwards (or decodes only for a laxer reader)
        cat.add_decisions([Decision(f"freesound:{i}", stage, "pass", "ok", config_hash="t",
                                    details={"content_sha256": sha})
                           for i, sha in ((1, good["sha256"]), (2, "b" * 64)) for stage in ("license_gate", "decode")])
        mark_probed(cat)
    cfgfile = tmp_path / "sao.toml"
    cfgfile.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\naudio_store = "{store}"\n'
                       f'[dedup]\nuncalibrated = true\nembeddings_dir = "{tmp_path / "emb"}"\n')
    monkeypatch.setattr(embed_stage, "load_clap_for", lambda cfg, unc=None: ClapModel(
        _FakeClapModule(), torch.device("cpu"), None, "HTSAT-tiny"))
    assert cli.main(["--config", str(cfgfile), "embed"]) == 0
    cap = capsys.readouterr()
    assert re.search(r"undecodable: \S*bad\.mp3 \(freesound:2\): \S+", cap.err)
    out = json.loads(cap.out)
    assert out["embedded"] == 1 and out["decode_errors"] == 1 and out["decode_rejects_written"] == 1
    named = [(u["recording_id"], pathlib.Path(u["path"]).name) for u in out["undecodable"]]
    assert named == [("freesound:2", "bad.mp3")]
    with Catalog(tmp_path / "c.duckdb") as cat:
        d = cat.latest_decision_map("decode")
        assert d["freesound:1"]["verdict"] == "pass" and d["freesound:2"]["verdict"] == "reject"
        assert d["freesound:2"]["details"]["content_sha256"] == "b" * 64
        assert d["freesound:2"]["reason"].startswith("audio-corrupt: ") and len(d["freesound:2"]["reason"]) > 16
        why = {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])}
        assert why == {"freesound:1": None, "freesound:2": "corrupt"}
    # rejected, it is no longer offered to the embedder: a second run neither retries it nor decides again
    assert cli.main(["--config", str(cfgfile), "embed"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["undecodable"] == [] and again["decode_rejects_written"] == 0 and again["already_stored"] == 1
    from sao.dedup.stage import record_undecodable
    with Catalog(tmp_path / "c.duckdb") as cat:         # the same failure found again: named, not decided twice
        named, written = record_undecodable(cat, {str(store / "bad.mp3"): ("b" * 64, "bad.mp3: cannot decode")},
                                            config_hash="t")
        assert [n["recording_id"] for n in named] == ["freesound:2"] and written == 0
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert cat.query("SELECT count(*) AS n FROM decisions WHERE stage = 'decode' AND verdict = 'reject'"
                         )[0]["n"] == 1
        assert cat.admitted_ids(["license_gate"]) == {"freesound:1"}


# --- 7. a catalogue held by another process -----------------------------------------------------------------------

@pytest.fixture
def held_catalogue(tmp_path):
    path = tmp_path / "c.duckdb"
    Catalog(path).close()
    p = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                          "print('held', flush=True); time.sleep(120)", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield path, p.pid
    finally:
        p.kill()
        p.wait()


def test_catalogue_in_use_gives_a_clear_error_and_the_cli_exits_2(held_catalogue, tmp_path, capsys, monkeypatch):
    path, pid = held_catalogue
    with pytest.raises(CatalogError, match=rf"catalogue {re.escape(str(path))} is in use by another sao process "
                                           rf"\(pid {pid}\); wait for it"):
        Catalog(path)
    cfgfile = tmp_path / "sao.toml"
    cfgfile.write_text(f'[paths]\ncatalog = "{path}"\n')
    monkeypatch.setenv("FREESOUND_API_TOKEN", "tok-x")
    assert cli.main(["--config", str(cfgfile), "refresh", "--base-url", "http://127.0.0.1:9/apiv2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by another sao process (pid {pid})" in err[0] and "Traceback" not in err[0]


# --- 8. python -m sao ------------------------------------------------------------------------------------------

def test_python_dash_m_sao():
    r = subprocess.run([sys.executable, "-m", "sao", "--help"], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0 and r.stdout.startswith("usage: sao") and "refresh" in r.stdout


def test_a_busy_catalogue_stays_transient_for_the_flow_retries(tmp_path):
    from flows.refresh import is_transient
    from sao.catalog import CatalogInUse
    assert is_transient(CatalogInUse(f"catalogue {tmp_path} is in use by another sao process"))
    assert not is_transient(CatalogError("bad input"))
