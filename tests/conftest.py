import json
import os
import tempfile
import pathlib

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SAO_NO_PROGRESS", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="sao-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus_entries():
    from sao.sources import sample_corpus
    return sample_corpus.load_metadata(REPO / "datasets" / "sample")


@pytest.fixture(scope="session")
def freesound_sounds(corpus_entries):
    from sao.sources.replica import build_freesound_sounds
    return build_freesound_sounds(corpus_entries)


@pytest.fixture(scope="session")
def fma_dir(corpus_entries, tmp_path_factory):
    from sao.sources.replica import build_fma_replica
    return build_fma_replica(corpus_entries, tmp_path_factory.mktemp("fma"))


@pytest.fixture(scope="session")
def replica(freesound_sounds, fma_dir, tmp_path_factory):
    """A replica without throttling, shared by the read-only tests."""
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    srv = ReplicaServer(freesound_sounds, ReplicaSettings(rate_limit_per_minute=0), fma_dir=fma_dir,
                        cache_dir=tmp_path_factory.mktemp("previews"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def catalog(tmp_path):
    from sao.catalog import Catalog
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        yield cat


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for every flow test (starting one takes about 9 s)."""
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness():
        yield


def flow_config(tmp_path, **sections) -> pathlib.Path:
    """A sao.toml under tmp_path for the flow tests: catalogue, audio, embeddings and the result
    cache in tmp_path, random-weight models allowed, a rate limit the replica never reaches."""
    base = {
        "paths": {"catalog": str(tmp_path / "c.duckdb"), "audio_store": str(tmp_path / "audio")},
        "freesound": {"rate_limit_per_minute": 6000},
        "music_screen": {"uncalibrated": True},
        "dedup": {"uncalibrated": True, "embeddings_dir": str(tmp_path / "emb")},
        "orchestration": {"results_dir": str(tmp_path / "results")},
        # no built-in default: the FMA match refuses to run without a catalogue
        "review": {"copyright_catalogue": str(REPO / "datasets" / "copyright_catalogue" / "sample.csv")},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "sao.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def decode_stored(cat, audio_store="/") -> dict:
    """For tests that store audio paths by hand: give each such recording its file's sha256 and
    run the decode stage, as the pipeline does after a download (the admission views read only
    audio that the decode stage passed)."""
    from sao.audio import file_digests
    from sao.audio.stage import run_decode
    store = pathlib.Path(audio_store)
    for rid, path in cat.con.execute("SELECT recording_id, audio_path FROM recordings "
                                     "WHERE audio_path IS NOT NULL AND content_sha256 IS NULL").fetchall():
        p = store / path
        sha = file_digests(p)[0] if p.is_file() else f"missing-{rid}"
        cat.set_audio(rid, sha, path, "preview")
    return run_decode(cat, audio_store=store, config_hash="t", show_progress=False)


def mark_probed(cat, duration=2.0, sample_rate=44100, channels=1) -> None:
    """For tests that write decode passes by hand: the probed facts the decode stage stores with
    them (the admission views count a decode pass only with its facts)."""
    cat.con.execute("UPDATE recordings SET audio_duration = coalesce(duration, ?), "
                    "audio_sample_rate = coalesce(sample_rate, ?), audio_channels = coalesce(channels, ?) "
                    "WHERE audio_path IS NOT NULL", [duration, sample_rate, channels])


def chromium_dom(url: str, profile, *extra: str) -> str:
    """The DOM headless Chromium renders for ``url`` (skips, or fails under SAO_REQUIRE_BROWSER,
    when no Chromium is installed: `make test` installs Debian's)."""
    import shutil
    import subprocess
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        if os.environ.get("SAO_REQUIRE_BROWSER"):
            pytest.fail("headless Chromium is required (make test installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (make test installs it)")
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *extra,
                           "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def run_stage(cfg, name: str, *, secrets: dict | None = None, **options):
    """One pipeline stage through the one runner (no run summary, no progress bar): its Stats."""
    from sao.pipeline.runner import run_pipeline
    from sao.pipeline.stage import RunOptions
    return run_pipeline(cfg, [name], options=RunOptions(**options), secrets=secrets, record=False,
                        show_progress=False)[name]
