"""The bounded chaos run: faults of every kind on the replica, SIGKILLs during the refresh (crawl,
download), the reconcile, the music screen, the embedding and the shard build, then the checks:
nothing lost, nothing stored twice, no token anywhere. `make chaos` runs the long version."""
import collections
import pathlib

import pytest

from sao import chaos


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    work = tmp_path_factory.mktemp("chaos")
    # one scenario carries every fault kind and kill point (`make chaos` runs many)
    return work, chaos.run(1, faults=20, kills=3, seed=100, train_every=0, work=work, echo=lambda *_: None)


@pytest.mark.timeout(600)
def test_bounded_chaos_loses_nothing_duplicates_nothing_leaks_nothing(bounded):
    _, results = bounded
    table = chaos.table(results)
    for r in results:
        assert (r.lost, r.duplicates, r.leaks) == ([], [], []), table
    faults = collections.Counter()
    for r in results:
        faults.update(r.faults)
    assert sum(faults.values()) >= 20 and len(faults) >= 5, table          # the faults really fired
    assert sum(r.kills for r in results) >= 3 and all(r.recovered for r in results), table
    assert "items lost" in table and table.splitlines()[-1].split()[-3:] == ["0", "0", "0"]


def test_the_checks_catch_what_they_look_for(bounded):
    """Break a finished scenario on purpose: each breakage must show up in its column."""
    from sao.catalog import Catalog
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    work, results = bounded
    root = work / f"scenario-{results[0].seed}"
    db = root / "catalog.duckdb"
    with Catalog(db) as cat:
        victim = cat.query("SELECT r.recording_id, r.source_id, r.audio_path FROM recordings r JOIN decisions d "
                           "USING (recording_id) WHERE r.source = 'freesound' AND d.stage = 'license_gate' "
                           "AND d.verdict = 'pass' AND r.audio_path IS NOT NULL "
                           "AND r.recording_id NOT IN (SELECT recording_id FROM takedowns) LIMIT 1")[0]
        cat.con.execute("UPDATE recordings SET audio_path = NULL WHERE recording_id = ?", [victim["recording_id"]])
    stored = next(p for p in (root / "audio").rglob("*") if p.is_file() and not p.name.startswith("."))
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])          # a partial file, final name
    (root / "exports").mkdir(exist_ok=True)
    (root / "exports" / "debug.log").write_text(f"Authorization: Token {chaos.TOKEN}\n")
    from sao.sources import sample_corpus
    from sao.sources.replica import build_freesound_sounds
    sounds = build_freesound_sounds(sample_corpus.load_metadata(pathlib.Path(chaos.__file__).parents[1] / "datasets" / "sample"))
    res = chaos.ScenarioResult(0, collections.Counter())
    with ReplicaServer(sounds, ReplicaSettings(api_tokens=[chaos.TOKEN])) as srv:
        chaos.check(root, srv, set(), set(), res)
    assert any(victim["recording_id"] in x and "without its audio" in x for x in res.lost)
    assert any("does not match its name" in x for x in res.duplicates)
    assert res.leaks == ["exports/debug.log holds a token"]
