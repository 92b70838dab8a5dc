"""Releases and attribution reports: the release policy (pure), immutable releases with their
exclusions, the published CSV format, TASL fields, take-down propagation and impact, and the
HTML report in headless Chromium."""
import csv
import datetime as dt
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from sao import cli
from sao.attribution import policy
from sao.attribution.release import ReleaseError, create_release, diff, get_release, release_items, takedown_impact
from sao.attribution.report import build_report
from sao.catalog import Catalog, Decision

from .test_shards import world  # noqa: F401  (the crawled, gated catalogue with audio)

# the first rows of the published SAO FMA attribution CSV (../shared/reference/sao_fma_attribution_published.csv)
PUBLISHED = pathlib.Path(__file__).parent / "data" / "sao_fma_attribution_published_head.csv"
REQ = ["license_gate"]


# --- the admission rule (the catalogue's admission macro): one test per exclusion reason --------------------------

def _reason(tmp_path, latest, taken_down=False, has_audio=True, required=("license_gate", "copyright_review", "dedup")):
    """(reason, detail) the catalogue's admission rule gives one recording with these latest decisions."""
    from .test_admission import one_recording
    with one_recording(tmp_path, latest, taken_down=taken_down, has_audio=has_audio) as cat:
        row = cat.admission(list(required))[0]
    return None if row["reason"] is None else (row["reason"], row["detail"])


ALL_PASS = {"license_gate": ("pass", "license-allowed"), "decode": ("pass", "decodes"),
            "copyright_review": ("pass", "not-music"), "dedup": ("pass", "unique")}


def test_admitted_when_every_required_stage_passes_with_audio_and_no_takedown(tmp_path):
    assert _reason(tmp_path, ALL_PASS) is None


@pytest.mark.parametrize("change, kw, want", [
    ({}, {"taken_down": True}, "take-down"),
    ({"license_gate": ("reject", "license-not-allowed: cc-by-nc-4.0")}, {}, "license"),
    ({"license_gate": ("reject", "opt-out: gen_ai_preference=no-gen-ai")}, {}, "opt-out"),
    ({"record": ("reject", "malformed-record: license: expected a string")}, {}, "malformed"),
    ({"audio": ("reject", "audio-corrupt: truncated")}, {}, "corrupt"),
    ({"decode": ("reject", "audio-corrupt: no frames")}, {}, "corrupt"),
    ({"decode": None}, {}, "pending"),
    ({"copyright_review": ("reject", "rejected by reviewer")}, {}, "review-rejected"),
    ({"copyright_review": ("review", "queued for content detection"), "music_screen": ("flag", "music")}, {},
     "music-flagged"),
    ({"dedup": ("reject", "duplicate of freesound:1")}, {}, "duplicate"),
    ({"dedup": None}, {}, "pending"),
    ({}, {"has_audio": False}, "no-audio"),
])
def test_each_exclusion_reason(tmp_path, change, kw, want):
    latest = {k: v for k, v in {**ALL_PASS, **change}.items() if v is not None}
    got = _reason(tmp_path, latest, **kw)
    assert got is not None and got[0] == want
    assert want in policy.EXCLUSION_REASONS


def test_take_down_wins_over_every_other_reason_and_unrequired_stages_do_not_block(tmp_path):
    assert _reason(tmp_path / "a", {"license_gate": ("reject", "license-missing")}, taken_down=True)[0] == "take-down"
    # a music flag blocks only through the stages the release requires
    assert _reason(tmp_path / "b", {"license_gate": ("pass", "x"), "decode": ("pass", "ok"),
                                    "music_screen": ("flag", "music")}, required=("license_gate",)) is None


def test_published_license_form_and_content_hash():
    assert [policy.published_license(x) for x in ("cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0")] == \
        ["cc0", "ccby", "ccby", "ccsampling+"]
    with pytest.raises(ValueError, match="no published attribution form"):
        policy.published_license("cc-by-nc-4.0")
    a = {"recording_id": "fma:1", "license_canonical": "cc0-1.0", "title": "T", "author": "A"}
    b = {"recording_id": "fma:2", "license_canonical": "cc-by-4.0", "title": "U", "author": "B"}
    assert policy.content_sha256([a, b]) == policy.content_sha256([b, a])
    assert policy.content_sha256([a, b]) != policy.content_sha256([a, dict(b, author="C")])


def test_diff_names_the_cause_of_each_removal():
    old = {r: {"recording_id": r, "license_canonical": "cc-by-4.0", "title": r} for r in ("a:1", "a:2", "a:3", "a:4", "a:5")}
    new = {"a:1": dict(old["a:1"], title="renamed"), "a:6": {"recording_id": "a:6"}}
    excl = {"a:2": ("take-down", ""), "a:3": ("license", "license-not-allowed: cc-by-nc-4.0"),
            "a:4": ("duplicate", "duplicate of a:9")}
    d = policy.diff_releases(old, new, excl)
    assert d["added"] == [{"recording_id": "a:6"}]
    causes = {r["recording_id"]: r["cause"] for r in d["removed"]}
    assert causes == {"a:2": "take-down", "a:3": "re-license: license-not-allowed: cc-by-nc-4.0",
                      "a:4": "new decision: duplicate (duplicate of a:9)", "a:5": "gone from the catalogue"}
    assert d["changed"] == [{"recording_id": "a:1", "fields": {"title": ["a:1", "renamed"]}}]


# --- releases over a real catalogue ---------------------------------------------------------------------------------

@pytest.fixture
def cat(world, tmp_path):  # noqa: F811
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    with Catalog(tmp_path / "c.duckdb") as c:
        yield c


def _admitted_ids(cat):
    return [r["recording_id"] for r in cat.query(
        "SELECT recording_id FROM decisions WHERE stage = 'license_gate' AND verdict = 'pass' ORDER BY 1")]


NOW = dt.datetime(2026, 1, 1)
HOSTILE_TEXT = [None, "", "plain", 'q"uote', "back\\slash", "tab\tnl\ncr\r", "\x00\x1f\x7f", "é ü 日本",
                "\u2028\u2029", "</script><!--", "\U0001f3b5 emoji", "[\"],[\"", "{}:,"]

STORABLE_TEXT = [t for t in HOSTILE_TEXT if t is None or "\x00" not in t]    # the catalogue refuses NUL


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_fast_json_lines_equal_the_json_module(text):
    # the release's hash lines, admitting decisions and attribution JSON are written without json.dumps
    # per value: each must be exactly what json.dumps writes, or a release's content hash would change
    import json as j
    values = ["freesound:1", "cc-by-4.0", text, text, None, text, "line", "a" * 64, text]
    assert policy.line_of(values) == j.dumps(values, ensure_ascii=False, separators=(",", ":"))
    item = dict(zip(policy.ITEM_FIELDS, values), admitted_by={"license_gate": 3, "dedup": 12})
    assert policy.item_line(item) == j.dumps(values[:-1] + ['{"dedup":12,"license_gate":3}'], ensure_ascii=False,
                                             separators=(",", ":"))
    stages = {str(text): 1, "b": 2} if text is not None else {"b": 2}
    assert policy.admitted_by_json(stages) == j.dumps(stages, sort_keys=True, ensure_ascii=False,
                                                           separators=(",", ":"))
    assert policy.admitted_by_json(stages, stored=True) == j.dumps(stages, sort_keys=True)   # release_items' form
    for odd in ({"x": True}, {"x": 1.5}, {"x": None}):      # not the usual str -> int: the json module writes it
        assert policy.admitted_by_json(odd) == j.dumps(odd, sort_keys=True, separators=(",", ":"))
        assert policy.admitted_by_json(odd, stored=True) == j.dumps(odd, sort_keys=True)
    assert policy.json_value(3) == "3" and policy.json_value(text) == j.dumps(text, ensure_ascii=False)


def test_release_items_hold_hostile_attribution_text_exactly(tmp_path):
    from .conftest import mark_probed
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([dict(source="freesound", source_id=str(i + 1), title=t, author=t, duration=2.0,
                                    sample_rate=44100, channels=1, license_raw="Creative Commons 0",
                                    license_canonical="cc0-1.0", page_url=f"https://freesound.org/s/{i + 1}/",
                                    crawl_time=NOW, content_sha256=f"{i + 1:064x}", audio_path=f"{i + 1}.wav")
                               for i, t in enumerate(STORABLE_TEXT)])
        cat.add_decisions([Decision(f"freesound:{i + 1}", stage, "pass", "ok", config_hash="t",
                                    details={"content_sha256": f"{i + 1:064x}"})
                           for i in range(len(STORABLE_TEXT)) for stage in ("license_gate", "decode")])
        mark_probed(cat)
        out = create_release(cat, "r1", required_stages=["license_gate"])
        rows = cat.query("SELECT title, author, attribution FROM release_items ORDER BY recording_id")
        assert out["recordings"] == len(STORABLE_TEXT) == len(rows)
        for r in rows:
            assert json.loads(r["attribution"])["title"] == r["title"] and json.loads(r["attribution"])["author"] == r["author"]
        # admitted_by stored as it always was (json.dumps(sort_keys=True)), so release diff across versions agrees
        stored = cat.query("SELECT admitted_by::VARCHAR AS a FROM release_items ORDER BY recording_id")
        assert all(r["a"] == json.dumps(json.loads(r["a"]), sort_keys=True) for r in stored)
        assert policy.diff_releases({"x": {"admitted_by": '{"dedup":2,"license_gate":1}'}},
                                    {"x": {"admitted_by": '{"license_gate": 1, "dedup": 2}'}}, {})["changed"] == []
        # the stored items hash to the release's content hash (what release verify recomputes)
        assert policy.content_sha256(release_items(cat, "r1").values()) == out["content_sha256"]


def test_release_freezes_admitted_items_with_decisions_and_exclusions(cat):
    ids = _admitted_ids(cat)
    cat.add_decisions([Decision(ids[0], "audio", "reject", "audio-corrupt: test", config_hash="t")])
    out = create_release(cat, "r1", required_stages=REQ, config_hash="t")
    assert out["status"] == "created" and out["version"] == 1 and out["recordings"] == len(ids) - 1
    items = cat.query("SELECT * FROM release_items WHERE release_name = 'r1'")
    assert ids[0] not in {i["recording_id"] for i in items}
    assert all(json.loads(i["admitted_by"])["license_gate"] > 0 for i in items)
    excl = {r["recording_id"]: r["reason"] for r in cat.query("SELECT * FROM release_exclusions")}
    assert excl[ids[0]] == "corrupt" and "license" in excl.values()
    assert len(items) + len(excl) == cat.query("SELECT count(*) AS n FROM recordings")[0]["n"]
    # the policy admits exactly what the shards' selection admits (less the corrupt one)
    from sao.shards.select import eligible_recordings
    assert {i["recording_id"] for i in items} == {r["recording_id"] for r in eligible_recordings(cat, REQ, "/")} - {ids[0]}
    # immutable: the same content is a no-op, other content under the same name is refused
    assert create_release(cat, "r1", required_stages=REQ)["status"] == "unchanged"
    cat.add_takedown(ids[1], "test")
    with pytest.raises(ReleaseError, match="immutable"):
        create_release(cat, "r1", required_stages=REQ)
    for bad in ("../x", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(ReleaseError, match="release name"):
            create_release(cat, bad, required_stages=REQ)
    with pytest.raises(ReleaseError, match="no release named"):
        get_release(cat, "nope")


def test_report_counts_equal_a_duckdb_query_and_csv_round_trips(cat, tmp_path):
    create_release(cat, "r1", required_stages=REQ)
    out = build_report(cat, "r1", tmp_path / "releases")
    folder = pathlib.Path(out["folder"])
    s = json.loads((folder / "summary.json").read_text())
    q = cat.con
    want = q.execute("SELECT source, license_canonical, count(*), "
                     "round(sum(duration) / 3600, 2) FROM release_items WHERE release_name = 'r1' "
                     "GROUP BY ALL").fetchall()
    # one row per license with its version (CC BY 3.0 and 4.0 apart), named as the license table names it
    from sao.licensing.table import license_name
    want = [(src, license_name(lic), n, h) for src, lic, n, h in want]
    assert sorted((r["source"], r["license"], r["recordings"], r["hours"]) for r in s["table"]) == sorted(want)
    assert s["total"]["recordings"] == q.execute(
        "SELECT n_recordings FROM releases WHERE name = 'r1'").fetchall()[0][0] == out["recordings"]
    assert s["exclusions"]["license"] == q.execute(
        "SELECT count(*) FROM release_exclusions WHERE release_name = 'r1' AND reason = 'license'").fetchall()[0][0] > 0
    # the published format: same columns as the published SAO FMA attribution CSV, round-trips
    with open(PUBLISHED, newline="", encoding="utf-8") as f:
        pub = list(csv.DictReader(f))
    published = list(pub[0].keys())
    assert {r["license"] for r in pub} <= {"cc0", "ccby"}          # the published license form we write
    items = release_items(cat, "r1")
    total = 0
    for source in ("freesound", "fma"):
        with open(folder / f"attribution-{source}.csv", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == published == list(policy.PUBLISHED_COLUMNS)
            rows = list(reader)
        total += len(rows)
        for row in rows:
            item = items[f"{source}:{row['id']}"]
            assert (row["title"], row["author"], row["url"]) == (item["title"] or "", item["author"] or "", item["url"] or "")
            assert row["license"] == policy.published_license(item["license_canonical"])
    assert total == len(items)
    # every CC-BY item has all four TASL fields, license with version and link
    with open(folder / "attribution-tasl.csv", newline="", encoding="utf-8") as f:
        tasl = list(csv.DictReader(f))
    ccby = [r for r in tasl if r["license"].startswith("CC-BY-")]    # SPDX ids, one vocabulary
    assert ccby and s["cc_by_missing_tasl"] == 0
    for r in ccby:
        assert r["title"] and r["author"] and r["source_url"].startswith("http")
        assert r["license_name"] in ("Attribution 3.0", "Attribution 4.0") and "creativecommons.org" in r["license_url"]
    fs_lines = (folder / "freesound-attribution.txt").read_text(encoding="utf-8").splitlines()
    assert len(fs_lines) == sum(1 for i in items if i.startswith("freesound:"))
    assert all(" by " in x and "-- License: " in x for x in fs_lines)
    md = (folder / "report.md").read_text()
    assert "| source | license | SPDX | recordings | hours |" in md and all((folder / "plots" / f"{k}.png").stat().st_size > 1000
                                                                    for k in ("durations", "licenses", "tags", "format"))
    assert {r["license"] for r in tasl} <= {"CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "LicenseRef-CC-Sampling-Plus-1.0"}
    _published_forms_check(folder, tasl, s)
    # rebuilding replaces the folder whole
    assert build_report(cat, "r1", tmp_path / "releases")["folder"] == str(folder)
    assert not [p for p in (tmp_path / "releases").iterdir() if p.name.startswith(".")]


def test_takedown_disappears_from_the_next_release_and_impact_names_everything(cat, world, tmp_path):  # noqa: F811
    from sao.shards import PlanConfig, build_shards
    from sao.train.checkpoint import save_checkpoint
    from sao.train.manifest import build_manifest
    import torch
    create_release(cat, "r1", required_stages=REQ)
    built = build_shards(cat, shards_root=str(tmp_path / "shards"), audio_store=world / "audio", required_stages=REQ,
                         plan_cfg=PlanConfig(seed=1), config_hash="t", name="b1", release="r1")
    assert built["release"]["name"] == "r1" and built["release"]["content_sha256"] == get_release(cat, "r1")["content_sha256"]
    victim = "freesound:100013"
    man = build_manifest(cat, str(tmp_path / "shards" / "b1"), ["diffusion"], stage="dit", step=1)
    assert man["shards_build"]["release"]["name"] == "r1"
    assert victim in {r["recording_id"] for r in man["recordings"]}
    save_checkpoint(tmp_path / "train" / "dit", 1, {"raw": {"w": torch.zeros(1)}}, {}, man)
    assert cli.main(["--config", str(_cfg(tmp_path)), "takedown", "add", victim, "--reason", "author request"]) == 0
    create_release(cat, "r2", required_stages=REQ)
    assert victim in release_items(cat, "r1") and victim not in release_items(cat, "r2")
    d = diff(cat, "r1", "r2")
    assert d["removed"] == [{"recording_id": victim, "cause": "take-down"}] and not d["added"]
    impact = takedown_impact(cat, victim, shards_root=tmp_path / "shards", checkpoint_roots=[tmp_path / "train"])
    assert impact["releases"] == ["r1"] and impact["takedowns"][0]["reason"] == "author request"
    assert impact["shards"] and {s["build"] for s in impact["shards"]} == {"b1"}
    assert [c["stage"] for c in impact["checkpoints"]] == ["dit"] and impact["checkpoints"][0]["release"]["name"] == "r1"
    # shards built from r1 now leave the taken-down item out, and say so
    again = build_shards(cat, shards_root=str(tmp_path / "shards"), audio_store=world / "audio", required_stages=REQ,
                         plan_cfg=PlanConfig(seed=1), config_hash="t", name="b2", release="r1")
    assert again["release"]["not_eligible_now"] == 1
    cat.close()
    assert cli.main(["--config", str(_cfg(tmp_path)), "takedown", "impact", victim]) == 0
    assert cli.main(["--config", str(_cfg(tmp_path)), "release", "diff", "r1", "r2"]) == 0
    assert cli.main(["--config", str(_cfg(tmp_path)), "release", "list"]) == 0
    assert cli.main(["--config", str(_cfg(tmp_path)), "release", "create", "../evil"]) == 2
    assert cli.main(["--config", str(_cfg(tmp_path)), "release", "report"]) == 0
    assert (tmp_path / "releases" / "r2" / "index.html").is_file()        # the newest release
    # every output location may be a file:// or any fsspec URL: never a local folder named "file:"
    import fsspec
    mem = fsspec.filesystem("memory")
    mem.pipe("/pub/r2/works/part-9999.js", b"left by an earlier, bigger report")
    assert cli.main(["--config", str(_cfg(tmp_path)), "release", "report", "--out", "memory://pub"]) == 0
    local = {p.relative_to(tmp_path / "releases" / "r2").as_posix() for p in (tmp_path / "releases" / "r2").rglob("*")
             if p.is_file()}
    remote = {f.removeprefix("/pub/r2/") for f in mem.find("/pub/r2")}
    assert remote == local and "croissant.json" in remote            # whole, no temporaries, old parts pruned
    assert mem.cat("/pub/r2/attribution-tasl.csv") == (tmp_path / "releases" / "r2" / "attribution-tasl.csv").read_bytes()
    assert cli.main(["--config", str(_cfg(tmp_path)), "release", "report", "--out", f"file://{tmp_path}/pub2"]) == 0
    assert (tmp_path / "pub2" / "r2" / "croissant.json").is_file()
    for url, found in ((f"file://{tmp_path}/ex", lambda: {p.name for p in (tmp_path / "ex").iterdir()}),
                       ("memory://ex", lambda: {f.rsplit("/", 1)[1] for f in mem.find("/ex")})):
        assert cli.main(["--config", str(_cfg(tmp_path)), "catalog", "export", "--out", url]) == 0
        assert "recordings.parquet" in found() and not any(n.startswith(".") for n in found())
    assert not list(tmp_path.rglob("file:*")) and not (pathlib.Path.cwd() / "file:").exists()


def _cfg(tmp_path):
    p = tmp_path / "sao.toml"
    p.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\nreleases = "{tmp_path / "releases"}"\n'
                 f'checkpoints = "{tmp_path / "train"}"\n[shards]\nroot = "{tmp_path / "shards"}"\n'
                 'required_stages = ["license_gate"]\n')
    return p


def test_html_report_renders_plots_and_filters_in_headless_chromium(cat, tmp_path):
    create_release(cat, "r1", required_stages=REQ)
    out = build_report(cat, "r1", tmp_path / "releases")
    page = pathlib.Path(out["html"])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        if os.environ.get("SAO_REQUIRE_BROWSER"):
            pytest.fail("headless Chromium is required (make test installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (make test installs it)")

    def dom(url, profile):
        return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / profile}",
                               "--virtual-time-budget=5000", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120).stdout
    full = dom(page.as_uri(), "c1")
    n = out["recordings"]
    assert 'data-plots-rendered="4"' in full and f'data-matches="{n}"' in full
    rows = lambda d: re.findall(r'<tr data-id="([^"$]+)"', d)  # noqa: E731  (rendered rows, not the script)
    assert len(rows(full)) == n
    author = "Kevin MacLeod"
    want = [r for r in release_items(cat, "r1").values() if author.lower() in (r["author"] or "").lower()]
    assert 0 < len(want) < n
    filtered = dom(page.as_uri() + "#q=" + author.replace(" ", "%20"), "c2")
    assert f'data-matches="{len(want)}"' in filtered
    assert sorted(rows(filtered)) == sorted(r["recording_id"] for r in want)


def _published_forms_check(folder, tasl, s):
    """The release's Croissant file passes mlcroissant's own validation and yields every TASL row
    with its license; the dataset card's YAML header says licenses, task and size as the Hub reads them."""
    import mlcroissant as mlc
    import yaml
    ds = mlc.Dataset(jsonld=folder / "croissant.json")           # raises ValidationError on any error
    assert not ds.metadata.ctx.issues.errors and not ds.metadata.ctx.issues.warnings, ds.metadata.ctx.issues.report()
    got = {r["recordings/recording_id"].decode(): r["recordings/license"].decode()
           for r in ds.records(record_set="recordings")}
    assert got == {r["recording_id"]: r["license"] for r in tasl}
    meta = json.loads((folder / "croissant.json").read_text())
    assert meta["distribution"][0]["sha256"] == hashlib.sha256((folder / "attribution-tasl.csv").read_bytes()).hexdigest()
    assert all(meta[k] for k in ("rai:dataCollection", "rai:dataPreprocessingProtocol", "rai:dataLimitations"))
    card = (folder / "README.md").read_text(encoding="utf-8")
    head = yaml.safe_load(card.split("---")[1])
    assert head["task_categories"] == ["text-to-audio"] and head["size_categories"] == ["n<1K"]
    assert set(head["license"]) <= {"cc0-1.0", "cc-by-3.0", "cc-by-4.0", "other"} and head["license"]
    for r in s["table"]:
        assert f"| {r['source']} | {r['spdx']} |" in card
