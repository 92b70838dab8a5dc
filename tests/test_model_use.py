"""[policy].model_use: how the model will be released decides which Freesound gen_ai_preference values admit a
recording (the one table in sao/licensing/model_use.py); a change of use makes the gate decide again, takes
nothing down, and a release records the use it was built for, which its attribution report states."""
import datetime as dt
import json

import pytest

from sao import cli, config, signing
from sao.attribution.release import ReleaseError, create_release, get_release, release_items
from sao.attribution.report import build_report
from sao.catalog import Catalog, Decision
from sao.licensing import LicensePolicy, license_gate
from sao.licensing.model_use import DEFAULT_MODEL_USE, GEN_AI_PREFERENCES, MODEL_USES, admits
from sao.licensing.stage import decided_under_other_policy, run_license_gate

NOW = dt.datetime(2026, 1, 1)
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"
REQ = ["license_gate"]

# every (model use, gen_ai_preference) pair, written out: a change to the table must change this too
EXPECTED = {
    "research-only": {"no-additional-preferences"},
    "closed-weights": {"no-additional-preferences"},
    "open-weights-noncommercial": {"no-additional-preferences", "open-source-models",
                                   "noncommercial-open-source-models"},
    "open-weights-commercial": {"no-additional-preferences", "open-source-models"},
}


def test_the_table_admits_exactly_these_pairs():
    assert GEN_AI_PREFERENCES == ("no-additional-preferences", "open-source-models",
                                  "noncommercial-open-source-models", "no-gen-ai")
    assert [u.name for u in MODEL_USES] == list(EXPECTED)
    for use in MODEL_USES:
        for pref in GEN_AI_PREFERENCES:
            want = pref in EXPECTED[use.name]
            assert admits(use.name, pref) is want, (use.name, pref)
            verdict = license_gate(CC0, gen_ai_preference=pref, policy=LicensePolicy(model_use=use.name)).verdict
            assert verdict == ("pass" if want else "reject"), (use.name, pref)
        assert use.summary
    # the default is a use that admits the fewest, and no configuration can admit an explicit opt-out
    assert DEFAULT_MODEL_USE == "research-only" == LicensePolicy().model_use == config.Config().policy.model_use
    assert len(EXPECTED[DEFAULT_MODEL_USE]) == min(len(v) for v in EXPECTED.values())


@pytest.mark.parametrize("use", ["Research-Only", "open-weights", "", None, 3, ["research-only"]])
def test_admits_refuses_an_unknown_use(use):
    with pytest.raises(ValueError, match="model_use"):
        admits(use, "no-additional-preferences")


# --- the configuration -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ['["no-gen-ai"]', "[]", '["no-gen-ai", "noncommercial-open-source-models"]'])
def test_the_old_refused_key_is_an_error_that_points_to_model_use(tmp_path, value):
    p = tmp_path / "sao.toml"
    p.write_text(f"[policy]\nrefused_gen_ai_preferences = {value}\n")
    with pytest.raises(config.ConfigError, match=r"^\[policy\]\.refused_gen_ai_preferences: removed.*"
                                                 r"\[policy\]\.model_use.*research-only"):
        config.load(p)


@pytest.mark.parametrize("value", ['"Research-Only"', '"open_weights_commercial"', '" research-only"', '""',
                                   '"no-gen-ai"', "1", '["research-only"]', "true"])
def test_a_model_use_outside_the_table_is_an_error(tmp_path, value):
    p = tmp_path / "sao.toml"
    p.write_text(f"[policy]\nmodel_use = {value}\n")
    with pytest.raises(config.ConfigError, match=r"\[policy\]\.model_use"):
        config.load(p)


def test_the_model_use_is_part_of_the_config_hash(tmp_path):
    p = tmp_path / "sao.toml"
    p.write_text('[policy]\nmodel_use = "open-weights-commercial"\n')
    cfg = config.load(p)
    assert config.license_policy(cfg).model_use == "open-weights-commercial"
    assert cfg.config_hash() != config.Config().config_hash()


# --- the gate decides again ------------------------------------------------------------------------------------

def _catalogue(cat):
    """freesound:1..5, CC0, with each of Freesound's preferences and none; audio stored and decoded."""
    prefs = {1: "no-additional-preferences", 2: "open-source-models", 3: "noncommercial-open-source-models",
             4: "no-gen-ai", 5: None}
    cat.upsert_recordings([{"source": "freesound", "source_id": str(i), "title": f"t{i}", "author": "a",
                            "crawl_time": NOW, "license_raw": CC0, "license_url": CC0,
                            "extra": {"gen_ai_preference": p} if p else {}} for i, p in prefs.items()])
    for i in prefs:
        rid = f"freesound:{i}"
        cat.set_audio(rid, f"sha-{i}", f"sha-{i}.wav", "preview")
        cat.con.execute("UPDATE recordings SET audio_duration = 5.0, audio_sample_rate = 44100, audio_channels = 1 "
                        "WHERE recording_id = ?", [rid])
        cat.add_decisions([Decision(rid, "decode", "pass", "ok", config_hash="t", details={"content_sha256": f"sha-{i}"})])


def _admitted(cat):
    return {int(r.split(":")[1]) for r in cat.admitted_ids(REQ)}


def test_a_change_of_model_use_re_decides_every_item_and_takes_nothing_down(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        assert run_license_gate(cat, LicensePolicy(), config_hash="a").written == 5
        assert _admitted(cat) == {1, 5}
        assert run_license_gate(cat, LicensePolicy(), config_hash="a").written == 0     # nothing changed
        nc = LicensePolicy(model_use="open-weights-noncommercial")
        # the old decisions still count in the admission view until the gate runs: releases check this
        assert decided_under_other_policy(cat, nc) == {"model use 'research-only'": 5}
        st = run_license_gate(cat, nc, config_hash="b")
        assert st.written == 5 and st.takedowns == 0 and _admitted(cat) == {1, 2, 3, 5}
        assert decided_under_other_policy(cat, nc) == {}
        latest = cat.latest_decision_map("license_gate")
        assert {d["details"]["inputs"]["policy"]["model_use"] for d in latest.values()} == {"open-weights-noncommercial"}
        assert latest["freesound:4"]["reason"] == "opt-out: gen_ai_preference=no-gen-ai"
        # a stricter use rejects what it does not admit, but the recordings did not change: no take-down,
        # so going back to the open use admits them again
        st = run_license_gate(cat, LicensePolicy(model_use="open-weights-commercial"), config_hash="c")
        assert st.takedowns == 0 and cat.takedowns() == [] and _admitted(cat) == {1, 2, 5}
        assert cat.latest_decision_map("license_gate")["freesound:3"]["reason"] == (
            "opt-out: gen_ai_preference=noncommercial-open-source-models does not admit model use "
            "open-weights-commercial")
        run_license_gate(cat, nc, config_hash="b")
        assert _admitted(cat) == {1, 2, 3, 5}
        # an author who opts out afterwards is still a take-down: the recording itself changed
        cat.upsert_recordings([{"source": "freesound", "source_id": "2", "title": "t2", "author": "a",
                                "crawl_time": NOW, "license_raw": CC0, "license_url": CC0,
                                "extra": {"gen_ai_preference": "no-gen-ai"}}])
        assert run_license_gate(cat, nc, config_hash="b").takedowns == 1
        assert [t["recording_id"] for t in cat.takedowns()] == ["freesound:2"]



def test_an_opt_out_after_a_stricter_use_rejected_the_item_is_still_a_take_down(tmp_path):
    # admitted under an open use (a release may hold it), then rejected because the use got stricter (no
    # take-down: only the policy changed); when the author then opts out, the releases must still hear of it
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        nc = LicensePolicy(model_use="open-weights-noncommercial")
        run_license_gate(cat, nc, config_hash="b")
        assert 2 in _admitted(cat)
        assert run_license_gate(cat, LicensePolicy(), config_hash="a").takedowns == 0 and 2 not in _admitted(cat)
        cat.upsert_recordings([{"source": "freesound", "source_id": "2", "title": "t2", "author": "a",
                                "crawl_time": NOW, "license_raw": CC0, "license_url": CC0,
                                "extra": {"gen_ai_preference": "no-gen-ai"}}])
        st = run_license_gate(cat, LicensePolicy(), config_hash="a")
        assert st.takedowns == 1 and [t["recording_id"] for t in cat.takedowns()] == ["freesound:2"]
        assert run_license_gate(cat, LicensePolicy(), config_hash="a").takedowns == 0     # once


# --- a release records its model use, its report states it --------------------------------------------------

def test_a_release_waits_for_the_gate_then_records_its_model_use_and_the_report_states_it(tmp_path):
    nc = LicensePolicy(model_use="open-weights-noncommercial")
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        run_license_gate(cat, LicensePolicy(), config_hash="a")
        with pytest.raises(ReleaseError, match=r"not decided for model use open-weights-noncommercial.*"
                                               r"model use 'research-only': 5.*sao gate"):
            create_release(cat, "r-nc", required_stages=REQ, gate_policy=nc)
        assert cat.query("SELECT count(*) AS n FROM releases")[0]["n"] == 0
        r1 = create_release(cat, "r-ro", required_stages=REQ)                    # the default use
        assert r1["model_use"] == "research-only" and get_release(cat, "r-ro")["model_use"] == "research-only"
        run_license_gate(cat, nc, config_hash="b")
        out = create_release(cat, "r-nc", required_stages=REQ, gate_policy=nc)
        assert out["status"] == "created" and out["model_use"] == "open-weights-noncommercial"
        assert get_release(cat, "r-nc")["model_use"] == "open-weights-noncommercial"
        assert set(release_items(cat, "r-nc")) == {"freesound:1", "freesound:2", "freesound:3", "freesound:5"}
        # the same content and name again is unchanged; under another use it is refused, never relabelled
        assert create_release(cat, "r-nc", required_stages=REQ, gate_policy=nc)["status"] == "unchanged"
        run_license_gate(cat, LicensePolicy(model_use="closed-weights"), config_hash="d")
        run_license_gate(cat, nc, config_hash="b")
        rep = build_report(cat, "r-nc", tmp_path / "releases")
    md = (tmp_path / "releases" / "r-nc" / "report.md").read_text()
    page = (tmp_path / "releases" / "r-nc" / "index.html").read_text()
    summary = json.loads((tmp_path / "releases" / "r-nc" / "summary.json").read_text())
    assert rep["recordings"] == 4
    for text in (md, page):
        assert "Built for model use open-weights-noncommercial (open weights, non-commercial:" in text
        assert "no-additional-preferences, noncommercial-open-source-models, open-source-models, or none stated" in text
    assert summary["model_use"]["name"] == "open-weights-noncommercial"
    assert summary["model_use"]["admitted_gen_ai_preferences"] == ["no-additional-preferences",
                                                                    "noncommercial-open-source-models",
                                                                    "open-source-models"]


def test_the_same_content_under_another_model_use_is_not_relabelled(tmp_path):
    closed = LicensePolicy(model_use="closed-weights")          # admits the same recordings as research-only
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        run_license_gate(cat, LicensePolicy(), config_hash="a")
        create_release(cat, "r1", required_stages=REQ)
        run_license_gate(cat, closed, config_hash="d")          # new decisions admit them: other content
        with pytest.raises(ReleaseError, match="other content"):
            create_release(cat, "r1", required_stages=REQ, gate_policy=closed)
    # gate decisions that recorded no policy admit the same content for any use: the name still keeps its use
    with Catalog(tmp_path / "d.duckdb") as cat:
        _catalogue(cat)
        cat.add_decisions([Decision("freesound:1", "license_gate", "pass", "ok", config_hash="t")])
        create_release(cat, "r1", required_stages=REQ)
        with pytest.raises(ReleaseError, match="with this content, built for research-only, not model use "
                                               "closed-weights"):
            create_release(cat, "r1", required_stages=REQ, gate_policy=closed)
        assert get_release(cat, "r1")["model_use"] == "research-only"
        assert create_release(cat, "r2", required_stages=REQ, gate_policy=closed)["model_use"] == "closed-weights"


def test_gate_decisions_from_before_model_uses_must_be_decided_again(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        old_policy = {"allowed": ["cc0-1.0"], "refused_gen_ai_preferences": ["no-gen-ai"]}   # what they recorded
        for i in (1, 2):
            cat.add_decisions([Decision(f"freesound:{i}", "license_gate", "pass", "license-allowed: cc0-1.0",
                                        config_hash="old", details={"inputs": {
                                            "license": CC0, "license_url": CC0, "license_title": None,
                                            "gen_ai_preference": "open-source-models" if i == 2 else
                                            "no-additional-preferences", "policy": old_policy}})])
        assert _admitted(cat) == {1, 2}       # the admission view alone still trusts them
        with pytest.raises(ReleaseError, match=r"no model use \(decided before \[policy\]\.model_use existed\): 2"):
            create_release(cat, "r1", required_stages=REQ)
        st = run_license_gate(cat, LicensePolicy(), config_hash="a")
        assert st.written == 5 and _admitted(cat) == {1, 5}
        assert st.takedowns == 0              # the upgrade changed the policy, not freesound:2
        assert create_release(cat, "r1", required_stages=REQ)["recordings"] == 2


def test_a_pass_the_same_policy_no_longer_gives_is_still_a_take_down(tmp_path):
    """Only a change of policy spares the take-down: the same inputs under the same policy judged again
    (a gate rule fixed since) are the recording's own failure."""
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        run_license_gate(cat, LicensePolicy(), config_hash="a")
        same = cat.latest_decision_map("license_gate")["freesound:2"]["details"]
        assert same["inputs"]["gen_ai_preference"] == "open-source-models"
        cat.add_decisions([Decision("freesound:2", "license_gate", "pass", "license-allowed: cc0-1.0 (old rule)",
                                    config_hash="a", details=same)])
        st = run_license_gate(cat, LicensePolicy(), config_hash="a")
        assert st.written == 1 and st.takedowns == 1
        assert cat.takedowns()[0]["reason"].startswith("opt-out-after-admission: opt-out: gen_ai_preference="
                                                       "open-source-models does not admit model use research-only")


def test_a_tampered_model_use_is_shown_as_text_and_breaks_the_signature(tmp_path):
    from sao.attribution.release_signature import after_create, verify_release
    keys = signing.generate_keys(tmp_path / "keys")
    key = signing.load_private_key(keys["private"])
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        run_license_gate(cat, LicensePolicy(), config_hash="a")
        out = create_release(cat, "r1", required_stages=REQ)
        after_create(cat, out, tmp_path / "releases", key)
        pub = signing.load_public_key(keys["public"])
        assert verify_release(cat, "r1", tmp_path / "releases", pub)["recordings"] == 2
        stmt = json.loads((tmp_path / "releases" / "r1.intoto.json").read_text())
        import base64
        assert json.loads(base64.b64decode(stmt["payload"]))["predicate"]["model_use"] == "research-only"
        cat.con.execute("UPDATE releases SET model_use = '<script>alert(1)</script>' WHERE name = 'r1'")
        with pytest.raises(signing.SigningError, match="model_use"):
            verify_release(cat, "r1", tmp_path / "releases", pub)
        build_report(cat, "r1", tmp_path / "releases")
    for name in ("index.html", "report.md"):
        text = (tmp_path / "releases" / "r1" / name).read_text()
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "not one that sao.licensing.model_use knows" in text


def test_the_cli_gate_and_release_follow_the_configured_model_use(tmp_path, capsys):
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
    conf = tmp_path / "sao.toml"

    def write(use):
        conf.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\nreleases = "{tmp_path / "releases"}"\n'
                        f'[shards]\nrequired_stages = ["license_gate"]\n[policy]\nmodel_use = "{use}"\n')
    write("research-only")
    assert cli.main(["--config", str(conf), "gate"]) == 0
    assert cli.main(["--config", str(conf), "release", "create", "r1"]) == 0
    assert "built for model use research-only" in capsys.readouterr().out
    write("open-weights-commercial")
    assert cli.main(["--config", str(conf), "release", "create", "r2"]) == 2      # the gate has not decided yet
    assert "run `sao gate` first" in capsys.readouterr().err
    assert cli.main(["--config", str(conf), "gate"]) == 0
    assert cli.main(["--config", str(conf), "release", "create", "r2"]) == 0
    assert "built for model use open-weights-commercial" in capsys.readouterr().out
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert set(release_items(cat, "r2")) == {"freesound:1", "freesound:2", "freesound:5"}
        assert get_release(cat, "r2")["model_use"] == "open-weights-commercial"
        assert cat.takedowns() == []


def test_shards_without_a_release_need_the_gate_decided_for_the_configured_use(tmp_path):
    from sao.shards import prepare_build
    from sao.shards.build import ShardBuildError
    from sao.shards.plan import PlanConfig
    with Catalog(tmp_path / "c.duckdb") as cat:
        _catalogue(cat)
        nc = LicensePolicy(model_use="open-weights-noncommercial")
        run_license_gate(cat, nc, config_hash="b")         # admits open-source-models for the open use...
        kw = dict(shards_root=str(tmp_path / "shards"), audio_store=tmp_path / "audio",
                  required_stages=["license_gate"], plan_cfg=PlanConfig())
        with pytest.raises(ShardBuildError, match="model use research-only.*run `sao gate` first"):
            prepare_build(cat, **kw)                       # ...so shards for the default use must wait for the gate
        assert not (tmp_path / "shards").exists()
        plan = prepare_build(cat, gate_policy=nc, **kw)
        assert plan.model_use == "open-weights-noncommercial"
        plan_json = json.loads((tmp_path / "shards" / plan.name / "plan.json").read_text())
        assert plan_json["model_use"] == "open-weights-noncommercial"
