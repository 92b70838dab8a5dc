"""One test per rule of the license policy (paper section 3, plus the generative-AI opt-out)."""
import pytest

from sao.licensing import (ALLOWED_LICENSES, LicensePolicy, canonical_license, freesound_attribution_line,
                           license_gate, tasl)

# Every license string named in shared/reference/data_pipeline.md (Freesound deed URLs and names,
# FMA titles with their counts, third-party FMA strings), with the verdict the policy requires.
DATA_PIPELINE_STRINGS = {
    # Freesound deed URLs (API `license` field), both schemes and both CC-BY versions
    "http://creativecommons.org/licenses/sampling+/1.0/": "pass",
    "http://creativecommons.org/publicdomain/zero/1.0/": "pass",
    "http://creativecommons.org/licenses/by/4.0/": "pass",
    "https://creativecommons.org/licenses/by/4.0/": "pass",
    "http://creativecommons.org/licenses/by/3.0/": "pass",
    "http://creativecommons.org/licenses/by-nc/4.0/": "reject",
    "https://creativecommons.org/licenses/by-nc/4.0/": "reject",
    "http://i.creativecommons.org/l/by-nc-sa/3.0/us/88x31.png": "reject",
    # FMA titles (top 10 by count) and others seen in real FMA metadata
    "Attribution-Noncommercial-Share Alike 3.0 United States": "reject",
    "Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International": "reject",
    "Attribution-NonCommercial-ShareAlike 3.0 International": "reject",
    "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0": "reject",
    "Attribution-Noncommercial-No Derivative Works 3.0 United States": "reject",
    "Attribution-NonCommercial-ShareAlike": "reject",
    "Attribution-NonCommercial 3.0 International": "reject",
    "Attribution-NonCommercial": "reject",
    "Attribution-ShareAlike": "reject",
    "CC0 1.0 Universal": "pass",
    "Public Domain Mark 1.0": "reject",
    "Attribution 3.0 United States": "pass",
    "Attribution 3.0 International": "pass",
    "Attribution 4.0 International": "pass",
    "Attribution-Share Alike 3.0 United States": "reject",
    "Attribution-NoDerivatives 3.0 International": "reject",
    "Attribution-NoDerivatives 4.0 International": "reject",
    "Attribution-Noncommercial 3.0 United States": "reject",
    "Attribution-Noncommercial-No Derivative Works 3.0 Germany": "reject",
    "FMA-Limited: Download Only": "reject",
    # names without a version: the version is needed for attribution, so they need a URL
    "Attribution": "reject",
    "Creative Commons Attribution": "reject",
    # Freesound filter names that carry their version implicitly
    "Creative Commons 0": "pass",
    "Sampling+": "pass",
    "Attribution NonCommercial": "reject",
    "": "reject",
}


@pytest.mark.parametrize("raw,expected", sorted(DATA_PIPELINE_STRINGS.items()))
def test_every_reference_license_string_maps_as_the_policy_says(raw, expected):
    url, title = (raw, None) if "://" in raw else (None, raw)
    r = license_gate(url, title)
    assert r.verdict == expected, (raw, r)
    if expected == "pass":
        assert r.canonical in ALLOWED_LICENSES
    else:
        assert r.reason.split(":")[0] in ("license-not-allowed", "license-unknown", "license-missing",
                                          "license-version-unknown")


def test_attribution_prefix_never_passes():
    for title in ("Attribution-NonCommercial", "Attribution-NonCommercial-ShareAlike 3.0 International",
                  "Attribution NonCommercial", "Attribution-NoDerivatives 4.0 International"):
        assert license_gate(None, title).verdict == "reject", title


def test_fma_title_needs_the_url_for_its_version():
    assert license_gate("http://creativecommons.org/licenses/by/3.0/", "Attribution").canonical == "cc-by-3.0"
    r = license_gate(None, "Attribution")
    assert r.verdict == "reject" and r.category == "license-version-unknown"


def test_title_and_url_that_disagree_are_rejected():
    r = license_gate("http://creativecommons.org/licenses/by-nc-sa/3.0/", "Attribution")
    assert r.verdict == "reject" and r.category == "license-conflict"


def test_sample_corpus_licenses(corpus_entries):
    allowed = {"CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-Sampling+-1.0"}
    for e in corpus_entries:
        r = license_gate(e["license_url"] or None, None if e["license_url"] else e["license"])
        assert (r.verdict == "pass") == (e["license"] in allowed), (e["id"], e["license"], r)


# the default model use (research-only: no weights released) admits only recordings that ask nothing more
@pytest.mark.parametrize("pref,verdict", [("no-gen-ai", "reject"), ("no-additional-preferences", "pass"),
                                          ("open-source-models", "reject"),
                                          ("noncommercial-open-source-models", "reject"), (None, "pass")])
def test_gen_ai_opt_out_is_excluded_by_default(pref, verdict):
    r = license_gate("http://creativecommons.org/publicdomain/zero/1.0/", gen_ai_preference=pref)
    assert r.verdict == verdict
    if pref == "no-gen-ai":
        assert r.reason == "opt-out: gen_ai_preference=no-gen-ai"
    elif verdict == "reject":
        assert r.reason == f"opt-out: gen_ai_preference={pref} does not admit model use research-only"


def test_policy_is_configurable():
    strict = LicensePolicy(allowed=frozenset({"cc0-1.0"}), model_use="open-weights-commercial")
    assert license_gate("http://creativecommons.org/licenses/by/4.0/", policy=strict).verdict == "reject"
    assert license_gate("http://creativecommons.org/publicdomain/zero/1.0/", gen_ai_preference=
                        "noncommercial-open-source-models", policy=strict).verdict == "reject"
    assert license_gate("http://creativecommons.org/publicdomain/zero/1.0/", gen_ai_preference=
                        "open-source-models", policy=strict).verdict == "pass"


def test_attribution_fields():
    a = tasl(title="Flowing water", author="Yuval", source_url="https://freesound.org/people/Yuval/sounds/197023/",
             license_canonical=canonical_license("https://creativecommons.org/licenses/by/4.0/"),
             license_url="https://creativecommons.org/licenses/by/4.0/")
    assert a["license"] == "CC-BY-4.0" and a["license_name"] == "Attribution 4.0"
    assert freesound_attribution_line(name="Flowing water", username="Yuval", sound_id=197023,
                                      license_canonical="cc-by-3.0") == \
        "Flowing water by Yuval -- https://freesound.org/s/197023/ -- License: Attribution 3.0"
