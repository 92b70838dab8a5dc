import pathlib
import subprocess
import sys

import pytest

from sao import cli

from .conftest import REPO


@pytest.mark.parametrize("argv", [[], ["config"], ["catalog"], ["catalog", "export"], ["corpus"], ["replica"],
                                  ["replica", "serve"], ["demo"], ["config", "validate"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: sao" in capsys.readouterr().out


def _config(tmp_path):
    f = tmp_path / "sao.toml"
    f.write_text(f'[paths]\ndata_dir = "data"\ncatalog = "data/catalog.duckdb"\nexports = "data/exports"\n'
                 f'sample_corpus = "{REPO / "datasets" / "sample"}"\n[replica]\ndata_dir = "data/replica"\n')
    return f


def test_demo_runs_end_to_end(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert cli.main(["--config", str(cfg), "demo"]) == 0
    out = capsys.readouterr().out
    assert "demo finished" in out and "'Sampling+': 1" in out
    assert "freesound  kept     LicenseRef-CC-Sampling-Plus-1.0" in out and "fma        rejected license-not-allowed" in out
    assert (tmp_path / "data" / "catalog.duckdb").exists()
    assert (tmp_path / "data" / "exports" / "recordings.parquet").exists()
    assert (tmp_path / "data" / "replica" / "fma" / "fma_metadata" / "tracks.csv").exists()
    # 26 Freesound previews + the 5 FMA tracks the gate admits (no share-alike or unknown-license audio)
    assert len(list((tmp_path / "data" / "audio").rglob("*.mp3"))) == 26 + 5
    assert "pipeline stage shards" in out and "diffusion:CC0-1.0" in out
    assert "the same recordings as the release: True" in out
    assert len(list((tmp_path / "data" / "shards").glob("snap-*/*/shard-*.tar"))) == 2
    # a second demo is incremental: nothing new to write
    assert cli.main(["--config", str(cfg), "demo"]) == 0
    again = capsys.readouterr().out
    assert "      written: 0\n" in again and "shards_written: 0\n      shards_skipped: 2" in again
    # the demo ends with its release's attribution report; the same content is the same release
    import re
    first = re.search(r"attribution report\s+(\S+index\.html)", out).group(1)
    assert re.search(r"attribution report\s+(\S+index\.html)", again).group(1) == first
    assert pathlib.Path(first).is_file() and "rel-" in first and "status: unchanged\n      version: 1" in again
    from sao.catalog import SCHEMA_VERSION
    assert cli.main(["--config", str(cfg), "catalog", "status"]) == 0
    assert f"schema version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert cli.main(["--config", str(cfg), "status"]) == 0
    status = capsys.readouterr().out
    assert status.count(" demo ") == 2 and status.count(" completed ") == 2 and "latest release  rel-" in status


def test_corpus_commands(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert cli.main(["--config", str(cfg), "corpus", "verify"]) == 0
    assert cli.main(["--config", str(cfg), "corpus", "list"]) == 0
    assert "Vibe Ace - Kevin MacLeod" in capsys.readouterr().out


def test_config_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[replica]\nport = 'x'\n")
    assert cli.main(["--config", str(bad), "config", "show"]) == 2
    assert "[replica].port" in capsys.readouterr().err


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "sao.cli", "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("sao ")


def test_replica_serve_process_answers(tmp_path):
    import re
    import time

    import requests
    cfg = _config(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "sao.cli", "--config", str(cfg), "replica", "serve", "--port", "0"],
                         stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = p.stdout.readline()
        api = re.search(r"(http://127\.0\.0\.1:\d+/apiv2)", line).group(1)
        r = requests.get(api + "/search/", headers={"Authorization": "Token sao-demo-token"}, timeout=10)
        assert r.status_code == 200 and r.json()["count"] == 40
    finally:
        p.terminate()
        p.wait(timeout=10)
        time.sleep(0)


def test_demo_on_a_corpus_with_an_undecodable_file_records_a_decision_and_goes_on(tmp_path, capsys):
    """`sao demo --config` on a corpus holding one file that does not decode used to stop at its
    first step with a RuntimeError traceback and no decision recorded."""
    import json
    import shutil
    keep = ("minetest-water-1", "opensfx-sheep", "fma-sakenointi", "fma-entropy")
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    entries = [e for e in json.loads((REPO / "datasets" / "sample" / "metadata.json").read_text()) if e["id"] in keep]
    for e in entries:
        shutil.copy(REPO / "datasets" / "sample" / e["file"], corpus / e["file"])
    (corpus / "metadata.json").write_text(json.dumps(entries))
    broken = next(e for e in entries if e["id"] == "fma-sakenointi")
    (corpus / broken["file"]).write_bytes(b"not audio at all " * 64)
    cfg = tmp_path / "sao.toml"
    cfg.write_text(f'[paths]\ndata_dir = "data"\ncatalog = "data/catalog.duckdb"\nexports = "data/exports"\n'
                   f'sample_corpus = "{corpus}"\n[replica]\ndata_dir = "data/replica"\n')
    assert cli.main(["--config", str(cfg), "demo"]) == 0
    captured = capsys.readouterr()
    assert "demo finished" in captured.out and "fma-sakenointi" in captured.err   # named, not a traceback
    from sao.catalog import Catalog
    with Catalog(tmp_path / "data" / "catalog.duckdb", read_only=True) as cat:
        rid = next(r["recording_id"] for r in cat.query("SELECT recording_id FROM recordings WHERE title = ?",
                                                         [broken["title"]]))
        bad = [d for d in cat.latest_decisions() if d["recording_id"] == rid and d["verdict"] == "reject"]
        assert bad and bad[0]["stage"] in ("audio", "decode")
        assert {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])}[rid] == "corrupt"
