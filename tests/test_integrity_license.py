"""Licensing integrity: an exact license gate (nothing read past a version, no tolerant parsing,
no prefix/tail matches, no query/fragment/userinfo/lookalike host), an opt-out that survives
spelling and refuses values it does not know, and one license table read by the gate, the
published attribution form, the dedup keep rule and the attribution report."""
import datetime as dt

import pytest

from sao.attribution import policy
from sao.dedup import keep
from sao.licensing import ALLOWED_LICENSES, LicensePolicy, canonical_license, license_gate
from sao.licensing.canonical import FMA_TITLES, FREESOUND_NAMES, UNKNOWN
from sao.licensing.stage import run_license_gate
from sao.licensing.table import LICENSES, license_name

from .test_shards import world  # noqa: F401  (the crawled, gated catalogue with audio)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"


def fma(title, url=""):
    """The FMA path: raw_tracks.csv's license_title, with its (here empty) license_url."""
    return license_gate(url, title)


# --- hole 1: nothing after the version is read as a jurisdiction ---------------------------------------------------

@pytest.mark.parametrize("title", ["Attribution 4.0 NonCommercial", "Attribution 3.0 No Derivatives",
                                   "Attribution 4.0 International ShareAlike", "Attribution 3.0 Banana Republic",
                                   "Creative Commons Attribution 4.0 NonCommercial"])
def test_words_after_the_version_are_never_a_jurisdiction(title):
    assert canonical_license(title) == UNKNOWN
    for r in (fma(title), license_gate(title)):            # FMA with an empty URL; Freesound name-only
        assert r.verdict == "reject" and r.category == "license-unknown", (title, r)
        assert repr(title) in r.reason


def test_unknown_titles_are_unknown_never_guessed():
    for title in ("Attribution-NonCommercial-ShareAlike 4.0 Internacional", "attribution 4.0 international",
                  "Attribution  4.0 International", "Attribution 4.0", "CC BY 4.0 NonCommercial", "Sampling",
                  "creative commons 0", "SAMPLING+", "Attribution Noncommercial"):
        assert canonical_license(title) == UNKNOWN, title
        assert fma(title).verdict == "reject" and license_gate(title).verdict == "reject", title


# --- hole 2: the opt-out ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pref", ["No-Gen-AI", "no-gen-ai ", "no_gen_ai", " NO GEN AI", "No_Gen-Ai\n"])
def test_opt_out_is_normalised(pref):
    r = license_gate(CC0, gen_ai_preference=pref)
    assert r.verdict == "reject" and r.reason == "opt-out: gen_ai_preference=no-gen-ai", (pref, r)


@pytest.mark.parametrize("pref", ["xyz", "", "  ", "no-gen-ai-please", "no gen-ai!", "nogenai"])
def test_unknown_gen_ai_preference_is_refused(pref):
    r = license_gate(CC0, gen_ai_preference=pref)
    assert r.verdict == "reject" and r.category == "opt-out-unknown", (pref, r)
    assert r.reason.startswith("opt-out") and repr(pref) in r.reason      # releases count 'opt-out%' as opt-out


@pytest.mark.parametrize("pref", [["no-gen-ai"], 3, 0, True, {"v": "no-gen-ai"}, 1.5])
def test_non_string_gen_ai_preference_is_refused(pref):
    r = license_gate(CC0, gen_ai_preference=pref)
    assert r.verdict == "reject" and r.category == "opt-out-unknown", (pref, r)


@pytest.mark.parametrize("pref", [None, "no-additional-preferences", "Open_Source_Models",
                                  "noncommercial open source models"])
def test_missing_or_known_consenting_preference_passes(pref):
    # open-weights-noncommercial is the model use every known preference but no-gen-ai consents to
    assert license_gate(CC0, gen_ai_preference=pref,
                        policy=LicensePolicy(model_use="open-weights-noncommercial")).verdict == "pass"


def test_model_use_refusals_match_normalised_values():
    commercial = LicensePolicy(model_use="open-weights-commercial")
    r = license_gate(CC0, gen_ai_preference="NonCommercial_Open_Source_Models", policy=commercial)
    assert r.verdict == "reject" and r.reason == ("opt-out: gen_ai_preference=noncommercial-open-source-models "
                                                  "does not admit model use open-weights-commercial")


def _rec(i, pref, **kw):
    return dict(source="freesound", source_id=i, title=f"s{i}", author="a", crawl_time=NOW,
                license_raw=CC0, extra={"gen_ai_preference": pref}, **kw)


def test_gate_stage_counts_unknown_opt_outs_separately(catalog):
    catalog.upsert_recordings([_rec(1, "xyz"), _rec(2, ["no-gen-ai"]), _rec(3, "No_Gen_AI"),
                               _rec(4, "no-additional-preferences"), _rec(5, None), _rec(6, 7)])
    st = run_license_gate(catalog, LicensePolicy(), config_hash="t")
    assert st.rejected[("freesound", "opt-out-unknown")] == 3
    assert st.rejected[("freesound", "opt-out")] == 1
    assert st.kept[("freesound", "cc0-1.0")] == 2
    reasons = {d["recording_id"]: d["reason"] for d in catalog.query(
        "SELECT recording_id, reason FROM decisions WHERE stage = 'license_gate'")}
    assert reasons["freesound:2"].startswith("opt-out-unknown:") and "['no-gen-ai']" in reasons["freesound:2"]
    assert run_license_gate(catalog, LicensePolicy(), config_hash="t").written == 0      # a rerun writes nothing
    excluded = {r["recording_id"]: r["reason"] for r in catalog.admission(["license_gate"])}
    assert {excluded[f"freesound:{i}"] for i in (1, 2, 3, 6)} == {"opt-out"}


# --- hole 3: an exact URL gate ------------------------------------------------------------------------------------

ALLOWED_PATHS = {"publicdomain/zero/1.0": "cc0-1.0", "licenses/by/3.0": "cc-by-3.0", "licenses/by/4.0": "cc-by-4.0",
                 "licenses/sampling+/1.0": "cc-sampling+-1.0", "licenses/by/3.0/us": "cc-by-3.0",
                 "licenses/by/3.0/de": "cc-by-3.0"}


def _variants(path):
    for scheme in ("http", "https"):
        for host in ("creativecommons.org", "www.creativecommons.org", "CreativeCommons.ORG"):
            for tail in ("", "/", "/deed.en", "/deed.pt_BR", "/deed.zh-Hans", "/legalcode", "/legalcode.de"):
                yield f"{scheme}://{host}/{path}{tail}"
    yield f"  HTTPS://CREATIVECOMMONS.ORG/{path.upper()}/  "


@pytest.mark.parametrize("path,want", sorted(ALLOWED_PATHS.items()))
def test_every_allowed_url_variant_passes(path, want):
    for url in _variants(path):
        r = license_gate(url)
        assert r.verdict == "pass" and r.canonical == want, (url, r)


EVIL = [
    "https://creativecommons.org/licenses/by-nc/4.0/", "http://creativecommons.org/licenses/by-nc/3.0/",
    "https://creativecommons.org/licenses/by-nd/4.0/", "https://creativecommons.org/licenses/by-sa/4.0/",
    "https://creativecommons.org/licenses/by-nc-sa/3.0/us/", "https://creativecommons.org/licenses/by-nc-nd/4.0/",
    "http://creativecommons.org/licenses/sampling/1.0/", "http://creativecommons.org/licenses/nc-sampling+/1.0/",
    "http://creativecommons.org/licenses/by/2.0/", "http://creativecommons.org/licenses/by/2.5/",
    "http://creativecommons.org/licenses/by/1.0/", "http://creativecommons.org/licenses/by/2.5/ar/",
    "http://creativecommons.org/publicdomain/mark/1.0/",
    "https://creativecommons.org/licenses/by/4.0/../by-nc/4.0/", "https://creativecommons.org/licenses/by/4.0/evil",
    "https://creativecommons.org/licenses/by/4.0/deed.en/../../by-nc/4.0/",
    "https://creativecommons.org.evil.com/licenses/by/4.0/", "https://evilcreativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org/licenses/by/4.0/?x=by-nc", "https://creativecommons.org/licenses/by/4.0/?",
    "https://creativecommons.org/licenses/by/4.0/#nc", "https://creativecommons.org/licenses/by/4.0/deed.en#x",
    "https://user@creativecommons.org/licenses/by/4.0/", "https://a:b@creativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org:8443/licenses/by/4.0/", "ftp://creativecommons.org/licenses/by/4.0/",
    "//creativecommons.org/licenses/by/4.0/", "creativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org/licenses/by/4.0//", "https://creativecommons.org/licenses/by/4.0/deed",
    "https://creativecommons.org/licenses/by/4.0/deed.en/", "https://creativecommons.org/licenses/by/4.0;nc",
    "https://creativecommons.org/licenses/by/4.0/us/", "https://creativecommons.org/licenses/by/3.0/usa/",
    "https://creativecommons.org/licenses/by/3.0/u/", "http://creativecommons.org/licenses/sampling+/1.0/br/",
    "https://creativecommons.org/publicdomain/zero/1.0/us/", "https://creativecommons.org/licenses/by/4.0 /",
    "https://creativecommons.org/licenses/by/4.0/\nhttps://creativecommons.org/licenses/by-nc/4.0/",
    "http://creativecommons.org/licenses/sampling%2B/1.0/",
    "https://creativecommons.org/licenses/by/04.0/", "https://creativecommons.org/licenses/by/4.00/",
    "https://creativecommons.org/licenses/by/4.0/legalcode.txt", "https://creativecommons.org/licenses/by/4.0.",
    "http://i.creativecommons.org/l/by/4.0/88x31.png", "https://creativecommons.org/licenses/by//4.0/",
    "https://creativecommons.org/licenses/by/4.0/deed.en?lang=nc", "https://creativecommons.org\\@evil.com/by/4.0/",
    "https://creativecommons.org/licenses/by/4.0/\u200b",
    "https://creativecommons.org/licenses/b\u0443/4.0/",                           # Cyrillic u, which looks like y
    "https://creativecommons.org/licenses/by/4.0/%2e%2e/by-nc/4.0/", "https://creativecommons.org/licenses/BY-NC/4.0/",
]


@pytest.mark.parametrize("url", EVIL)
def test_not_allowed_and_junk_urls_are_rejected(url):
    r = license_gate(url)
    assert r.verdict == "reject" and r.canonical not in ALLOWED_LICENSES, (url, r)
    assert repr(url)[:60] in r.reason               # the raw value, repr'd, shows in the reason


def test_reject_reason_truncates_the_raw_value():
    url = "https://creativecommons.org/licenses/by/4.0/?" + "x" * 5000
    r = license_gate(url)
    assert r.verdict == "reject" and repr(url)[:60] in r.reason and len(r.reason) < 300
    r = license_gate(None, "Attribution " + "NonCommercial " * 400)
    assert r.verdict == "reject" and len(r.reason) < 300


def test_fma_url_and_title_must_both_be_recognised_and_agree():
    by4 = "https://creativecommons.org/licenses/by/4.0/"
    assert fma("Attribution 4.0 International", by4).canonical == "cc-by-4.0"
    assert fma("Attribution", by4).canonical == "cc-by-4.0"                      # family title + versioned URL
    assert fma("Attribution 3.0 United States", "http://creativecommons.org/licenses/by/3.0/us/").canonical == \
        "cc-by-3.0"
    assert fma("Attribution 3.0 International", by4).category == "license-conflict"   # versions disagree
    assert fma("Attribution-NonCommercial", by4).category == "license-conflict"
    # a URL given but not recognised rejects, whatever the title says
    r = fma("Attribution 4.0 International", "https://creativecommons.org.evil.com/licenses/by/4.0/")
    assert r.verdict == "reject" and "evil.com" in r.reason
    # a title given but not recognised rejects, whatever the URL says
    r = fma("Attribution 4.0 NonCommercial", by4)
    assert r.verdict == "reject" and "NonCommercial" in r.reason
    assert fma("", "").category == fma(None, None).category == "license-missing"
    assert fma(None, "   ").category == "license-missing"


@pytest.mark.parametrize("value", [3, ["https://creativecommons.org/licenses/by/4.0/"], b"Creative Commons 0"])
def test_non_string_license_values_are_rejected(value):
    assert canonical_license(value) == UNKNOWN
    r = license_gate(value)
    assert r.verdict == "reject" and r.category == "license-unknown"


# --- the one license table ------------------------------------------------------------------------------------

def test_the_table_is_the_allow_list_with_published_names_and_rank():
    ids = [row.canonical for row in LICENSES]
    assert frozenset(ids) == ALLOWED_LICENSES == LicensePolicy().allowed
    assert ids == sorted(ids, key=lambda c: keep.LICENSE_RANK[c]) == ["cc0-1.0", "cc-by-4.0", "cc-by-3.0",
                                                                       "cc-sampling+-1.0"]
    for row in LICENSES:
        assert policy.published_license(row.canonical) == row.published in ("cc0", "ccby", "ccsampling+")
        r = license_gate(row.deed_url)
        assert r.verdict == "pass" and r.canonical == row.canonical
        assert license_name(row.canonical) == row.name
    assert [license_name(c) for c in ids] == ["CC0 1.0", "CC BY 4.0", "CC BY 3.0", "CC Sampling+ 1.0"]


def test_fma_titles_and_freesound_names_agree_with_the_table():
    assert FMA_TITLES and FREESOUND_NAMES
    for table in (FMA_TITLES, FREESOUND_NAMES):
        for title, canonical in table.items():
            for r in (fma(title), license_gate(title)):
                assert (r.verdict == "pass") == (canonical in ALLOWED_LICENSES), (title, r)
                assert r.canonical == canonical
    # FMA as the published attribution CSV shows it: cc0 and ccby titles exist and pass
    passing = {policy.published_license(c) for c in FMA_TITLES.values() if c in ALLOWED_LICENSES}
    assert passing == {"cc0", "ccby"}
    # Freesound's four names: CC0 and Sampling+ carry their only version; Attribution needs the URL
    assert {n: license_gate(n).verdict for n in FREESOUND_NAMES} == {
        "Creative Commons 0": "pass", "Sampling+": "pass", "Attribution": "reject",
        "Attribution NonCommercial": "reject"}
    assert license_gate("Attribution").category == "license-version-unknown"


def test_dedup_prefers_the_most_permissive_license_as_the_table_ranks():
    base = dict(sample_rate=44100, channels=2, duration=10.0, created_at=NOW)
    members = [dict(base, recording_id=f"x:{i}", license_canonical=c) for i, c in
               enumerate(["cc-sampling+-1.0", "cc-by-3.0", "cc-by-4.0", "cc0-1.0"])]
    order = [keep.pick_kept(members[i:])["license_canonical"] for i in range(4)]
    assert order == ["cc0-1.0"] * 4
    assert keep.pick_kept(members[:3])["license_canonical"] == "cc-by-4.0"
    assert keep.pick_kept(members[:2])["license_canonical"] == "cc-by-3.0"


# --- the attribution report keeps license versions apart -----------------------------------------------------

def test_report_tables_keep_cc_by_versions_apart(world, tmp_path):  # noqa: F811
    import shutil

    from sao.attribution.release import create_release
    from sao.attribution.report import _markdown, summary
    from sao.catalog import Catalog
    shutil.copy(world / "c.duckdb", tmp_path / "c.duckdb")
    with Catalog(tmp_path / "c.duckdb") as cat:
        create_release(cat, "r1", required_stages=["license_gate"], config_hash="t")
        s = summary(cat, "r1")
        want = cat.con.execute("SELECT source, license_canonical, count(*) FROM release_items "
                               "WHERE release_name = 'r1' GROUP BY ALL").fetchall()
    got = sorted((r["source"], r["license"], r["recordings"]) for r in s["table"])
    assert got == sorted((src, license_name(c), n) for src, c, n in want)
    names = {r["license"] for r in s["table"] if r["source"] == "fma"}      # FMA's corpus part has both versions
    assert {"CC BY 3.0", "CC BY 4.0"} <= names
    md = _markdown(s, {})
    assert "| fma | CC BY 3.0 |" in md and "| fma | CC BY 4.0 |" in md


def test_report_license_table_is_per_version_in_rank_order():
    from sao.attribution.report import license_table
    rows = [{"source": "freesound", "license_canonical": c, "n": n, "seconds": 3600.0 * n}
            for c, n in (("cc-sampling+-1.0", 1), ("cc-by-3.0", 2), ("cc0-1.0", 3), ("cc-by-4.0", 4))]
    rows.append({"source": "fma", "license_canonical": "cc-by-3.0", "n": 5, "seconds": 36.0})
    assert [(r["source"], r["license"], r["recordings"], r["hours"]) for r in license_table(rows)] == [
        ("fma", "CC BY 3.0", 5, 0.01), ("freesound", "CC0 1.0", 3, 3.0), ("freesound", "CC BY 4.0", 4, 4.0),
        ("freesound", "CC BY 3.0", 2, 2.0), ("freesound", "CC Sampling+ 1.0", 1, 1.0)]


# --- review finding 11: ports and languages are exact lists, not "any two letters" ----------------------------

# Neither a CC BY 3.0 port nor a deed language: NC/SA/ND spelt where a jurisdiction or a language goes.
NOT_A_PORT_OR_LANGUAGE = [
    "http://creativecommons.org/licenses/by/3.0/nc/", "http://creativecommons.org/licenses/by/3.0/sa/",
    "http://creativecommons.org/licenses/by/3.0/nd/", "http://creativecommons.org/licenses/by/3.0/xx/",
    "http://creativecommons.org/licenses/by/3.0/nc-nd/", "http://creativecommons.org/licenses/by/3.0/zz/",
    "http://creativecommons.org/licenses/by/3.0/uk/",            # England & Wales was ported at 2.0, never at 3.0
    "http://creativecommons.org/licenses/by/3.0/scotland/",      # 2.5 only
    "https://creativecommons.org/licenses/by/4.0/deed.nc-nd", "https://creativecommons.org/licenses/by/4.0/deed.nc",
    "https://creativecommons.org/licenses/by/4.0/legalcode.nc-sa", "https://creativecommons.org/licenses/by/4.0/deed.sa",
    "https://creativecommons.org/licenses/by/4.0/deed.nd", "https://creativecommons.org/licenses/by/4.0/deed.xx",
    "https://creativecommons.org/licenses/by/4.0/deed.zz", "https://creativecommons.org/licenses/by/4.0/deed.nc_nd",
    "https://creativecommons.org/licenses/by/3.0/de/deed.nc", "https://creativecommons.org/licenses/by/3.0/de/deed.nc-sa",
    "https://creativecommons.org/publicdomain/zero/1.0/deed.nc", "https://creativecommons.org/licenses/by/4.0/deed.en-nc",
    "http://creativecommons.org/licenses/sampling+/1.0/legalcode.nd",
]


@pytest.mark.parametrize("url", NOT_A_PORT_OR_LANGUAGE)
def test_a_port_or_language_that_cc_does_not_publish_is_rejected(url):
    assert canonical_license(url) == UNKNOWN, url
    r = license_gate(url)
    assert r.verdict == "reject" and r.category == "license-unknown" and repr(url)[:60] in r.reason, (url, r)


def test_every_published_cc_by_3_port_and_deed_language_passes():
    from sao.licensing.canonical import CC_BY_30_PORTS, DEED_LANGUAGES, LEGALCODE_LANGUAGES
    # the real lists, spot-checked: the ports CC published for 3.0 (and only those), its deed languages
    assert {"us", "de", "au", "nz", "igo", "am", "az", "ca", "es", "ch", "rs"} <= CC_BY_30_PORTS
    assert not {"nc", "sa", "nd", "xx", "uk", "jp", "kr", "scotland", "il"} & CC_BY_30_PORTS
    assert len(CC_BY_30_PORTS) == 42
    assert {"en", "de", "pt-br", "zh-hans", "zh-hant", "sr-latn", "eo", "fy"} <= DEED_LANGUAGES
    assert not {"nc", "sa", "nd", "xx", "nc-nd", "nc-sa"} & (DEED_LANGUAGES | LEGALCODE_LANGUAGES)
    assert {"mi", "hy", "ast", "oc-aranes"} <= LEGALCODE_LANGUAGES and DEED_LANGUAGES <= LEGALCODE_LANGUAGES
    for port in CC_BY_30_PORTS:
        for tail in ("/", "", "/deed.en", "/legalcode"):
            url = f"http://creativecommons.org/licenses/by/3.0/{port}{tail}"
            assert license_gate(url).canonical == "cc-by-3.0" and license_gate(url).verdict == "pass", url
    for lang in DEED_LANGUAGES:
        for base in ("https://creativecommons.org/licenses/by/4.0", "http://creativecommons.org/licenses/by/3.0/us",
                     "https://creativecommons.org/publicdomain/zero/1.0"):
            assert license_gate(f"{base}/deed.{lang}").verdict == "pass", (base, lang)
    for lang in LEGALCODE_LANGUAGES:
        assert license_gate(f"https://creativecommons.org/licenses/by/3.0/es/legalcode.{lang}").verdict == "pass"


def test_ports_of_licenses_the_gate_does_not_admit_are_named_only_with_a_real_jurisdiction():
    assert canonical_license("http://creativecommons.org/licenses/by-nc-nd/2.5/scotland/") == "cc-by-nc-nd-2.5"
    assert canonical_license("http://creativecommons.org/licenses/by-nc/3.0/us/") == "cc-by-nc-3.0"
    for junk in ("http://creativecommons.org/licenses/by-nc/3.0/nc/", "http://creativecommons.org/licenses/by-sa/3.0/xx/"):
        assert canonical_license(junk) == UNKNOWN and license_gate(junk).verdict == "reject"


# --- review finding 12: the configuration cannot switch the opt-out off --------------------------------------
# (no [policy].model_use admits no-gen-ai: tests/test_model_use.py pins the whole table)

def test_a_configured_model_use_decides_the_gate(tmp_path):
    from sao import config
    p = tmp_path / "sao.toml"
    p.write_text('[policy]\nmodel_use = "open-weights-commercial"\n')
    pol = config.license_policy(config.load(p))
    assert license_gate(CC0, gen_ai_preference="no-gen-ai", policy=pol).reason == "opt-out: gen_ai_preference=no-gen-ai"
    assert license_gate(CC0, gen_ai_preference="noncommercial-open-source-models", policy=pol).verdict == "reject"
    assert license_gate(CC0, gen_ai_preference="open-source-models", policy=pol).verdict == "pass"


@pytest.mark.parametrize("use", ["", "Research-Only", "research_only", " research-only", "open-weights", "none"])
def test_a_policy_built_in_code_takes_only_a_known_model_use(use):
    with pytest.raises(ValueError, match="model_use: .*not one of research-only"):
        LicensePolicy(model_use=use)
