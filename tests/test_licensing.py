import pytest

from sao.licensing import canonical_license, deed_url


@pytest.mark.parametrize("raw,expected", [
    ("http://creativecommons.org/publicdomain/zero/1.0/", "cc0-1.0"),
    ("https://creativecommons.org/publicdomain/zero/1.0/deed.en", "cc0-1.0"),
    ("http://creativecommons.org/licenses/by/3.0/", "cc-by-3.0"),
    ("https://creativecommons.org/licenses/by/4.0/", "cc-by-4.0"),
    ("http://creativecommons.org/licenses/sampling+/1.0/", "cc-sampling+-1.0"),
    ("http://creativecommons.org/licenses/by-nc/4.0/", "cc-by-nc-4.0"),
    ("http://creativecommons.org/licenses/by-nc-sa/3.0/us/", "cc-by-nc-sa-3.0"),
    ("http://i.creativecommons.org/l/by-nc-sa/3.0/us/88x31.png", "unknown"),   # a badge image, not a deed URL
    ("http://creativecommons.org/publicdomain/mark/1.0/", "pdm-1.0"),
    ("https://evil.example/licenses/by/4.0/", "unknown"),
    ("Creative Commons 0", "cc0-1.0"),
    ("Attribution", "cc-by"),                       # no version in the name
    ("Attribution-NonCommercial", "cc-by-nc"),       # never a prefix match onto cc-by
    ("Attribution 4.0 International", "cc-by-4.0"),
    ("CC0 1.0 Universal", "cc0-1.0"),
    ("Public Domain Mark 1.0", "pdm-1.0"),
    ("CC-sampling-plus-1.0", "cc-sampling+-1.0"),
    ("", "unknown"), (None, "unknown"), ("Attribution-Noncommercial-No Derivative Works 3.0 Germany", "cc-by-nc-nd-3.0"),
    ("FMA-Limited: Download Only", "unknown"), ("Attribution Banana 3.0", "unknown"),
])
def test_canonical_license(raw, expected):
    assert canonical_license(raw) == expected


def test_deed_url_round_trip():
    for lic in ("cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0"):
        assert canonical_license(deed_url(lic)) == lic
    assert deed_url("gpl-2.0") == ""
