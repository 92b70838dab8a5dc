"""`sao weights`: verified, resumable checkpoint downloads from a loopback HTTP server; the token only
to the Hugging Face endpoint; the lock file; `weights list`; the checksum table itself."""
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest

from sao.log import QuietHTTPServer
from sao import cli
from sao.fsutil import UnsafePathError
from sao.weights import fetch, table
from sao.weights.fetch import WeightsError
from sao.weights.table import WeightEntry, WeightFile

DATA = bytes(range(256)) * 40            # 10 240 bytes
OTHER = b"not the published bytes" * 100


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class FileServer:
    """Serves FILES (url path -> bytes) on 127.0.0.1 with Range support (206/416); can redirect a path,
    refuse one with 401, cut one response short once, or ignore Range. Records every request's headers."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.redirects: dict[str, str] = {}
        self.refuse: set[str] = set()
        self.cut_once: dict[str, int] = {}   # path -> bytes sent before the connection is closed
        self.ignore_range = False
        self.busy_once: set[str] = set()      # paths answered 503 once
        self.seen: list[tuple[str, dict]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = urlsplit(self.path).path
                srv.seen.append((path, {k.lower(): v for k, v in self.headers.items()}))
                if path in srv.redirects:
                    self.send_response(302)
                    self.send_header("Location", srv.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path in srv.busy_once:
                    srv.busy_once.discard(path)
                    self.send_error(503)
                    return
                if path in srv.refuse:
                    self.send_error(401)
                    return
                if path not in srv.files:
                    self.send_error(404)
                    return
                data = srv.files[path]
                start = 0
                rng = self.headers.get("Range")
                if rng and not srv.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = srv.cut_once.pop(path, None)
                self.wfile.write(body[:cut] if cut is not None else body)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def headers_for(self, path: str) -> list[dict]:
        return [h for p, h in self.seen if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer({})
    yield srv
    srv.close()


def hf_entry(name="toy", files=(("w.bin", DATA),), digest=None, **kw) -> WeightEntry:
    return WeightEntry(name=name, stage="toy_stage", folder=name, hf_repo="org/toy", files=tuple(
        WeightFile(n, "sha256", digest(b) if digest else sha(b), len(b)) for n, b in files), **kw)


def serve_hf(srv: FileServer, e: WeightEntry, data: dict[str, bytes]) -> None:
    for f in e.files:
        srv.files[urlsplit(table.file_url(e, f, mirror=srv.url)).path] = data[f.name]


def test_fetch_verifies_renames_and_records_it(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": DATA})
    r = fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False)
    dest = tmp_path / "toy" / "w.bin"
    assert r.path == dest and dest.read_bytes() == DATA and r.downloaded == len(DATA)
    assert not (tmp_path / "toy" / "w.bin.part").exists()
    rec = json.loads((tmp_path / fetch.LOCK_NAME).read_text())["files"]["toy/w.bin"]
    assert rec["name"] == "toy" and rec["file"] == "toy/w.bin"
    assert rec["url"] == f"{server.url}/org/toy/resolve/main/w.bin"
    assert (rec["digest_kind"], rec["digest"], rec["digest_source"]) == ("sha256", sha(DATA), "table")
    assert rec["size"] == len(DATA) and rec["fetched_at"]
    # again: nothing downloaded, the file checked in place
    n = len(server.seen)
    assert fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False).downloaded == 0
    assert len(server.seen) == n


def test_a_direct_md5_url_goes_through_the_mirror_without_the_token(server, tmp_path):
    e = WeightEntry(name="zen", stage="toy_stage", folder="zen", files=(WeightFile(
        "a.pth", "md5", hashlib.md5(DATA).hexdigest(), url="https://zenodo.org/record/1/files/a.pth?download=1"),))
    server.files["/record/1/files/a.pth"] = DATA
    fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, token="hf_secret_token", progress=False)
    assert (tmp_path / "zen" / "a.pth").read_bytes() == DATA
    assert all("authorization" not in h for h in server.headers_for("/record/1/files/a.pth"))


def test_a_wrong_checksum_is_refused_and_leaves_no_file(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": OTHER})
    with pytest.raises(WeightsError) as exc:
        fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False)
    msg = str(exc.value)
    assert "toy/w.bin" in msg and sha(DATA) in msg and sha(OTHER) in msg and "mismatch" in msg
    assert not (tmp_path / "toy" / "w.bin").exists() and not (tmp_path / "toy" / "w.bin.part").exists()
    assert not (tmp_path / fetch.LOCK_NAME).exists()


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": DATA})
    path = "/org/toy/resolve/main/w.bin"
    server.cut_once[path] = 4000
    with pytest.raises(WeightsError) as exc:             # no retries: the part is kept
        fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False, retries=0)
    assert "toy/w.bin" in str(exc.value) and "resume" in str(exc.value)
    part = tmp_path / "toy" / "w.bin.part"
    assert part.stat().st_size == 4000 and not (tmp_path / "toy" / "w.bin").exists()
    r = fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False, retries=0)
    assert server.headers_for(path)[-1]["range"] == "bytes=4000-"
    assert r.downloaded == len(DATA) - 4000 and r.path.read_bytes() == DATA and not part.exists()


def test_a_lost_connection_is_resumed_within_one_fetch(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": DATA})
    path = "/org/toy/resolve/main/w.bin"
    server.cut_once[path] = 1234
    r = fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False, retries=2, backoff_s=0)
    assert [h.get("range") for h in server.headers_for(path)] == [None, "bytes=1234-"]
    assert r.path.read_bytes() == DATA


def test_a_busy_server_is_retried(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": DATA})
    server.busy_once.add("/org/toy/resolve/main/w.bin")
    r = fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False, backoff_s=0)
    assert r.path.read_bytes() == DATA and len(server.seen) == 2


def test_a_server_that_ignores_the_range_restarts_from_zero(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": DATA})
    part = tmp_path / "toy" / "w.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another run")
    server.ignore_range = True
    r = fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False)
    assert r.path.read_bytes() == DATA


def test_a_null_digest_needs_expect(server, tmp_path):
    e = hf_entry(digest=lambda b: None)
    serve_hf(server, e, {"w.bin": DATA})
    with pytest.raises(WeightsError) as exc:
        fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False)
    assert "toy/w.bin" in str(exc.value) and "--expect" in str(exc.value)
    assert server.seen == [] and not (tmp_path / "toy" / "w.bin").exists()     # refused before downloading
    with pytest.raises(WeightsError, match="mismatch"):
        fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False, expect={"w.bin": sha(OTHER)})
    fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False, expect={"w.bin": sha(DATA)})
    rec = fetch.read_lock(tmp_path)["toy/w.bin"]
    assert (rec["digest"], rec["digest_source"]) == (sha(DATA), "--expect")
    # list trusts it by the digest --expect recorded
    assert fetch.file_status(tmp_path, e, e.files[0], fetch.read_lock(tmp_path), verify=True).state == "present"


def test_expect_values(tmp_path):
    e = WeightEntry(name="two", stage="toy_stage", folder="two", hf_repo="org/two", files=(
        WeightFile("a", "sha256", sha(DATA)), WeightFile("b", "sha256", None), WeightFile("c", "md5", None)))
    assert fetch.parse_expect(e, ["b=" + sha(OTHER).upper()], list(e.files)) == {"b": sha(OTHER)}
    assert fetch.parse_expect(e, [sha(OTHER)], [e.files[1]]) == {"b": sha(OTHER)}
    with pytest.raises(WeightsError, match="must name its file"):
        fetch.parse_expect(e, [sha(OTHER)], list(e.files))
    with pytest.raises(WeightsError, match="not one of its files"):
        fetch.parse_expect(e, ["zzz=" + sha(OTHER)], list(e.files))
    with pytest.raises(ValueError, match="not a md5 digest"):
        fetch.parse_expect(e, ["c=" + sha(OTHER)], list(e.files))
    with pytest.raises(WeightsError, match="differs from the published"):
        fetch.fetch_file(e, e.files[0], tmp_path, expect={"a": sha(OTHER)})


def test_the_token_goes_to_the_hf_host_only_never_to_a_redirect_target(server, tmp_path):
    other = FileServer({"/blob/w.bin": DATA})
    try:
        e = hf_entry(gated=True)
        path = "/org/toy/resolve/main/w.bin"
        # the mirror stands for the HF endpoint; the LFS redirect goes to another host (localhost, not 127.0.0.1)
        server.redirects[path] = f"http://localhost:{other.port}/blob/w.bin"
        r = fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, token="hf_secret_token", progress=False)
        assert r.path.read_bytes() == DATA
        assert server.headers_for(path)[0]["authorization"] == "Bearer hf_secret_token"
        assert other.seen and all("authorization" not in h for _, h in other.seen)
        assert "hf_secret_token" not in (tmp_path / fetch.LOCK_NAME).read_text()
        # a refusal names the file and the reason, never the token
        server.refuse.add("/org/toy/resolve/main/x.bin")
        e2 = hf_entry(files=(("x.bin", DATA),))
        with pytest.raises(WeightsError) as exc:
            fetch.fetch_file(e2, e2.files[0], tmp_path, mirror=server.url, token="hf_secret_token", progress=False)
        assert "toy/x.bin" in str(exc.value) and "401" in str(exc.value) and "hf_secret_token" not in str(exc.value)
    finally:
        other.close()


def test_token_allowed_is_exact():
    hf = table.HF_ENDPOINT
    assert fetch.token_allowed("https://huggingface.co/org/m/resolve/main/x", hf)
    assert fetch.token_allowed("https://huggingface.co:443/x", hf)
    for url in ("https://cdn-lfs.huggingface.co/x", "http://huggingface.co/x", "https://huggingface.co:444/x",
                "https://huggingface.co.evil.example/x", "https://evil.example/huggingface.co/x",
                "https://user@evil.example/x"):
        assert not fetch.token_allowed(url, hf), url


def test_a_file_being_fetched_elsewhere_is_refused(server, tmp_path):
    e = hf_entry()
    serve_hf(server, e, {"w.bin": DATA})
    (tmp_path / "toy").mkdir()
    with fetch._flock(tmp_path / "toy" / ".w.bin.lock"):
        with pytest.raises(WeightsError, match="another `sao weights fetch`"):
            fetch.fetch_file(e, e.files[0], tmp_path, mirror=server.url, progress=False)


def test_concurrent_lock_updates_all_land(tmp_path):
    def record(i):
        fetch._record(tmp_path, {f"e/{i}": {"name": "e", "file": f"e/{i}", "digest_kind": "sha256",
                                            "digest": sha(bytes([i]))}})
    threads = [threading.Thread(target=record, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fetch.read_lock(tmp_path)) == sorted(f"e/{i}" for i in range(12))


def test_path_traversal_in_the_table_or_the_lock_is_refused(server, tmp_path):
    models = tmp_path / "models"
    for e in (WeightEntry(name="bad", stage="toy_stage", folder="bad", hf_repo="org/bad",
                          files=(WeightFile("../x", "sha256", sha(DATA)),)),
              WeightEntry(name="bad", stage="toy_stage", folder="../up", hf_repo="org/bad",
                          files=(WeightFile("x", "sha256", sha(DATA)),))):
        with pytest.raises(UnsafePathError):
            fetch.fetch_file(e, e.files[0], models, mirror=server.url, progress=False)
    assert server.seen == [] and not (tmp_path / "x").exists() and not (tmp_path / "up").exists()
    models.mkdir()
    (models / fetch.LOCK_NAME).write_text(json.dumps({"version": 1, "files": {"bad/x": {
        "name": "bad", "file": "../x", "digest_kind": "sha256", "digest": sha(DATA)}}}))
    with pytest.raises(UnsafePathError, match=r"\.\./x"):
        fetch.read_lock(models)


@pytest.fixture
def toy_table(monkeypatch):
    """The real table plus two toy stages: 'toy_ok' (one file) and 'toy_two' (two files)."""
    ok = WeightEntry(name="ok", stage="toy_ok", folder="ok", hf_repo="org/ok", files=(WeightFile(
        "w.bin", "sha256", sha(DATA), len(DATA)),))
    two = WeightEntry(name="two", stage="toy_two", folder="two", hf_repo="org/two", files=(
        WeightFile("a.bin", "sha256", sha(DATA)), WeightFile("b.bin", "sha256", sha(DATA))))
    monkeypatch.setattr(table, "ENTRIES", (*table.ENTRIES, ok, two))
    monkeypatch.setattr(table, "STAGES", {**table.STAGES, "toy_ok": ("toy ok", ("ok",)),
                                          "toy_two": ("toy two", ("two",))})
    return ok, two


def test_weights_list_reports_present_missing_mismatch_and_calibrated(server, tmp_path, toy_table, capsys,
                                                                      monkeypatch):
    ok, two = toy_table
    serve_hf(server, ok, {"w.bin": DATA})
    monkeypatch.setenv(fetch.MIRROR_ENV, server.url)
    d = tmp_path / "models"
    assert cli.main(["weights", "fetch", "ok", "--dir", str(d), "--no-progress"]) == 0
    assert "ok/w.bin" in capsys.readouterr().out
    (d / "two").mkdir()
    (d / "two" / "a.bin").write_bytes(OTHER)                   # b.bin missing
    files, calibrated = fetch.status(d)
    states = {s.key: s.state for s in files}
    assert states["ok/w.bin"] == "present"
    assert states["two/a.bin"] == "checksum-mismatch" and states["two/b.bin"] == "missing"
    assert states["panns/Cnn14_DecisionLevelMax_mAP=0.385.pth"] == "missing"
    assert calibrated["toy_ok"] and not calibrated["toy_two"] and not calibrated["music_screen"]
    assert cli.main(["weights", "list", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "present" in lines["ok/w.bin"] and "checksum-mismatch" in lines["two/a.bin"]
    assert "missing" in lines["two/b.bin"]
    assert "toy_ok" in out and [ln for ln in out.splitlines() if ln.split()[:2] == ["toy_ok", "calibrated:"]]
    assert [ln for ln in out.splitlines() if ln.split()[:3] == ["toy_two", "NOT", "calibrated"]]
    assert "[music_screen].checkpoint" in out and "[dedup].clap_checkpoint" in out and "--t5-path" in out
    # a recorded file changed afterwards is caught (its mtime no longer matches the lock)
    p = d / "ok" / "w.bin"
    p.write_bytes(OTHER[:len(DATA)].ljust(len(DATA), b"x"))
    assert {s.key: s.state for s in fetch.status(d)[0]}["ok/w.bin"] == "checksum-mismatch"


def test_cli_fetch_with_expect_and_the_config_hint(server, tmp_path, monkeypatch, capsys):
    e = WeightEntry(name="nul", stage="music_screen", folder="nul", hf_repo="org/nul",
                    files=(WeightFile("c.json", "sha256", None),))
    monkeypatch.setattr(table, "ENTRIES", (*table.ENTRIES, e))
    serve_hf(server, e, {"c.json": DATA})
    monkeypatch.setenv(fetch.MIRROR_ENV, server.url)
    d = tmp_path / "m"
    assert cli.main(["weights", "fetch", "nul", "--dir", str(d), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "nul/c.json" in err and "--expect" in err
    assert cli.main(["weights", "fetch", "nul", "--dir", str(d), "--no-progress", "--expect", sha(DATA)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "[music_screen].checkpoint" in out
    (d / fetch.LOCK_NAME).write_text(json.dumps({"version": 1, "files": {"x": {
        "name": "x", "file": "../../etc/passwd", "digest_kind": "sha256", "digest": sha(DATA)}}}))
    assert cli.main(["weights", "list", "--dir", str(d)]) == 2
    assert "../../etc/passwd" in capsys.readouterr().err


def test_the_real_table():
    keys = [table.key(e, f) for e in table.ENTRIES for f in e.files]
    assert len(keys) == len(set(keys))
    assert {e.name for e in table.ENTRIES} == {"panns", "clap", "t5-base", "stable-audio-open-1.0"}
    for e in table.ENTRIES:
        assert e.stage in table.STAGES
        for f in e.files:
            table.file_path("/models", e, f)                  # every name is a safe path
            if f.digest is not None:
                assert table.check_digest(f.digest_kind, f.digest, what=f.name) == f.digest
            assert f.digest_kind == ("md5" if e.name == "panns" else "sha256")
    for _, names in table.STAGES.values():
        [table.entry(n) for n in names]
    panns = table.entry("panns")
    assert table.file_url(panns, panns.files[0]) == ("https://zenodo.org/record/3987831/files/"
                                                     "Cnn14_DecisionLevelMax_mAP%3D0.385.pth?download=1")
    t5 = table.entry("t5-base")
    assert table.file_url(t5, t5.files[1]) == ("https://huggingface.co/google-t5/t5-base/resolve/"
                                               f"{t5.revision}/model.safetensors")
    assert {f.name for f in t5.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    # the one file with no published digest known
    assert [table.key(e, f) for e in table.ENTRIES for f in e.files if f.digest is None] == [
        "stable-audio-open-1.0/model_config.json"]
    assert table.entry("stable-audio-open-1.0").gated
    with pytest.raises(table.UnknownWeights, match="known: panns"):
        table.entry("nope")


@pytest.mark.parametrize("argv", [["weights"], ["weights", "list"], ["weights", "fetch"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0 and f"usage: sao {' '.join(argv)}" in capsys.readouterr().out


def test_fetched_weights_fill_only_empty_settings_and_only_while_verified(server, tmp_path, monkeypatch):
    """`sao weights fetch` points the config at what it fetched: an empty [music_screen].checkpoint
    follows the lock file's verified record; a setting the user gave is kept; a file changed since is not used."""
    from sao import config
    name = "Cnn14_DecisionLevelMax_mAP=0.385.pth"
    toy = WeightEntry(name="panns", stage="music_screen", folder="panns",
                      files=(WeightFile(name, "md5", hashlib.md5(DATA).hexdigest(), len(DATA),
                                        url="https://zenodo.org/record/3987831/files/x.pth"),))
    monkeypatch.setattr(table, "ENTRIES", tuple(toy if e.name == "panns" else e for e in table.ENTRIES))
    server.files["/record/3987831/files/x.pth"] = DATA
    monkeypatch.setenv(fetch.MIRROR_ENV, server.url)
    cfg_file = tmp_path / "sao.toml"
    cfg_file.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    assert config.load(cfg_file).music_screen.checkpoint == ""          # nothing fetched yet
    assert cli.main(["--config", str(cfg_file), "weights", "fetch", "panns", "--no-progress"]) == 0
    got = tmp_path / "data" / "models" / "panns" / name
    assert config.load(cfg_file).music_screen.checkpoint == str(got)
    assert config.load(cfg_file).dedup.clap_checkpoint == ""             # CLAP was not fetched
    cfg_file.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n[music_screen]\ncheckpoint = "/mine.pth"\n')
    assert config.load(cfg_file).music_screen.checkpoint == "/mine.pth"
    cfg_file.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    got.write_bytes(OTHER[:len(DATA)])                                    # changed since it was verified
    assert config.load(cfg_file).music_screen.checkpoint == ""
