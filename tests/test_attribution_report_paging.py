"""The attribution report's works table at scale: the page stays small, its works live in sidecar
parts (``works/part-*.js``) the page loads from disk when it needs them, every work in exactly one
part; a search, a sort and a page reach works in the last part; hostile titles and URLs stay text;
hours and license names read the same in every table."""
import datetime as dt
import json
import pathlib
import re

import pytest

from sao.attribution.release import create_release
from sao.attribution.report import build_report, hours_text
from sao.attribution.report_works import read_part
from sao.catalog import Catalog, Decision

from .conftest import chromium_dom, mark_probed

NOW = dt.datetime(2026, 1, 1)
N = 1100                 # more than two pages of 500 rows
PART = 100               # works per part: 11 parts
LICENSES = ["cc0-1.0", "cc-by-4.0", "cc-by-3.0"]
LATE = "Zebra crossing at dusk"       # the title of freesound:999, the last work in recording-id order


def _catalogue(path, rows):
    with Catalog(path) as cat:
        cat.upsert_recordings([dict(source="freesound", source_id=str(i + 1), duration=2.0, sample_rate=44100,
                                    channels=1, license_raw=r.get("license", "cc0-1.0"),
                                    license_canonical=r.get("license", "cc0-1.0"), crawl_time=NOW,
                                    content_sha256=f"{i + 1:064x}", audio_path=f"{i + 1}.wav",
                                    **{k: v for k, v in r.items() if k != "license"})
                               for i, r in enumerate(rows)])
        cat.add_decisions([Decision(f"freesound:{i + 1}", stage, "pass", "ok", config_hash="t",
                                    details={"content_sha256": f"{i + 1:064x}"})
                           for i in range(len(rows)) for stage in ("license_gate", "decode")])
        mark_probed(cat)
        create_release(cat, "r1", required_stages=["license_gate"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("paging")
    rows = [dict(title=LATE if i + 1 == 999 else f"Work {i + 1} water", author=f"author{(i * 7) % 37}",
                 license=LICENSES[i % 3], page_url=f"https://freesound.org/s/{i + 1}/") for i in range(N)]
    _catalogue(d / "c.duckdb", rows)
    with Catalog(d / "c.duckdb") as cat:
        out = build_report(cat, "r1", d / "releases", part_rows=PART)
        ids = [r[0] for r in cat.con.execute("SELECT recording_id FROM release_items WHERE release_name = 'r1' "
                                             "ORDER BY recording_id").fetchall()]
    return pathlib.Path(out["html"]), out, ids


def _body(dom: str) -> dict:
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))


def _rows(dom: str) -> list[list[str]]:
    """The rendered works rows' cells, as text (not the script's template)."""
    return [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r'<tr data-id="[^"$]+">(.*?)</tr>', dom, re.S)]


def test_the_page_stays_small_and_the_parts_hold_every_work_exactly_once(report):
    page, out, ids = report
    html = page.read_text(encoding="utf-8")
    assert out["works_parts"] == N // PART == 11
    assert "Work 5 water" not in html and LATE not in html          # no work is inlined in the page
    assert page.stat().st_size < 300_000
    index = json.loads(re.search(r'<script id="works-index" type="application/json">(.*?)</script>', html,
                                 re.S).group(1))
    files = sorted((page.parent / "works").glob("part-*.js"))
    assert [p["file"] for p in index["parts"]] == [f"works/{f.name}" for f in files]
    seen = []
    for k, f in enumerate(files):
        number, works = read_part(f)
        assert number == k and len(works) == index["parts"][k]["rows"] == PART
        seen += [w["id"] for w in works]
    assert seen == ids and len(set(seen)) == N == index["total"] == out["recordings"]
    assert read_part(files[-1])[1][-1]["id"] == "freesound:999"


def test_the_page_opens_with_its_first_rows_parts_and_a_page_loads_only_its_own(report, tmp_path):
    page, _, ids = report
    dom = chromium_dom(page.as_uri(), tmp_path / "p1")
    body = _body(dom)
    assert body["parts-loaded"] == "5" and body["matches"] == str(N)        # the parts of the first 500 rows
    assert [r[0] for r in _rows(dom)] == ids[:500]
    dom = chromium_dom(page.as_uri() + "#page=3", tmp_path / "p2")
    assert _body(dom)["parts-loaded"] == "2"                         # the first part and the page's own
    assert [r[0] for r in _rows(dom)] == ids[1000:]


def test_a_search_in_chromium_finds_a_work_only_in_the_last_part(report, tmp_path):
    page, _, _ = report
    # no virtual time: the parts a search needs are added while the page loads, so --dump-dom waits for them
    dom = chromium_dom(page.as_uri() + "#q=zebra%20CROSSING", tmp_path / "p")
    body = _body(dom)
    assert body["parts-loaded"] == "11" and body["matches"] == "1"
    assert float(body["works-ready-ms"]) <= float(body["search-done-ms"])
    (row,) = _rows(dom)
    assert row[:4] == ["freesound:999", LATE, f"author{(998 * 7) % 37}", "CC BY 3.0"]    # LICENSES[998 % 3]
    # the source link is named by its address, not "link"
    assert row[4] == '<a href="https://freesound.org/s/999/" title="https://freesound.org/s/999/">freesound.org/s/999</a>'
    dom = chromium_dom(page.as_uri() + "#q=author3", tmp_path / "p2")        # author3, author30 ... author36
    assert _body(dom)["matches"] == str(sum(1 for i in range(N) if f"author{(i * 7) % 37}".startswith("author3")))


def test_the_works_table_sorts_by_a_column_in_natural_order(report, tmp_path):
    page, _, ids = report
    natural = lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())]  # noqa: E731
    dom = chromium_dom(page.as_uri() + "#sort=-0", tmp_path / "p1")
    assert [r[0] for r in _rows(dom)] == sorted(ids, key=natural, reverse=True)[:500]
    assert 'data-col="0" aria-sort="descending"' in dom
    dom = chromium_dom(page.as_uri() + "#sort=2&page=2", tmp_path / "p2")
    authors = [r[2] for r in _rows(dom)]
    want = sorted(((f"author{(i * 7) % 37}", ids.index(f"freesound:{i + 1}")) for i in range(N)),
                  key=lambda a: (natural(a[0]), a[1]))
    assert authors == [a for a, _ in want][500:1000]
    # a click on a header sorts by it, a second click reverses, and the address says so
    clicked = page.parent / "clicked.html"
    clicked.write_text(page.read_text(encoding="utf-8").replace("</body>", (
        "<script>const th = document.querySelector('#works th[data-col=\"1\"]'); th.click(); th.click();"
        "addEventListener('load', () => { document.body.dataset.hash = location.hash; });</script></body>")),
        encoding="utf-8")
    dom = chromium_dom(clicked.as_uri(), tmp_path / "p3")
    titles = [r[1] for r in _rows(dom)]
    assert titles[0] == LATE and titles[1:] == sorted(titles[1:], key=natural, reverse=True)
    assert _body(dom)["hash"] == "#sort=-1" and 'data-col="1" aria-sort="descending"' in dom


HOSTILE = "</script><script>alert(1)</script>"


def test_hostile_titles_and_urls_in_a_part_stay_text(tmp_path):
    rows = [dict(title=HOSTILE, author="<b>x</b>", page_url="javascript:alert(1)"),
            dict(title="t2", author="a\tb\nc", page_url='https://a.org/"onmouseover="alert(1)'),
            dict(title="t3", author="A", page_url=" https://a.org/3 "),
            dict(title="t4", author="A", page_url="JAVASCRIPT:alert(1)")]
    _catalogue(tmp_path / "c.duckdb", rows)
    with Catalog(tmp_path / "c.duckdb") as cat:
        out = build_report(cat, "r1", tmp_path / "releases", part_rows=2)
    page = pathlib.Path(out["html"])
    text = "".join(p.read_text(encoding="utf-8") for p in (page.parent / "works").glob("*.js"))
    for bad in ("<", ">", "&", "</script"):
        assert bad not in text
    works = {w["id"]: w for f in sorted((page.parent / "works").glob("*.js")) for w in read_part(f)[1]}
    assert works["freesound:1"]["title"] == HOSTILE and works["freesound:1"]["link"] is None
    assert works["freesound:2"]["author"] == "a b c"            # tabs and newlines read as spaces, as HTML shows them
    assert works["freesound:2"]["link"] == 'https://a.org/"onmouseover="alert(1)'
    assert works["freesound:3"]["link"] == "https://a.org/3" and works["freesound:4"]["link"] is None
    dom = chromium_dom(page.as_uri() + "#q=t", tmp_path / "p")
    rows = {r[0]: r for r in _rows(dom)}
    assert set(rows) == set(works) and _body(dom)["matches"] == "4"
    assert rows["freesound:1"][1] == "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert rows["freesound:1"][2] == "&lt;b&gt;x&lt;/b&gt;" and rows["freesound:1"][4] == "javascript:alert(1)"
    assert rows["freesound:4"][4] == "JAVASCRIPT:alert(1)"
    # a quote in a URL stays inside the attribute value: the link has its href and title, no handler
    assert re.findall(r"<a [^>$]*>", dom) == [
        '<a href="https://a.org/&quot;onmouseover=&quot;alert(1)" title="https://a.org/&quot;onmouseover=&quot;alert(1)">',
        '<a href="https://a.org/3" title="https://a.org/3">']
    assert "<script>alert" not in dom


def test_the_plain_link_shortcut_agrees_with_the_full_check(monkeypatch):
    from sao.attribution import report_works
    urls = ["https://freesound.org/s/1/", "HTTP://Example.org/a?b=1&c=2", "https://a.org", "https://a.org:8080/x#y",
            "https://a-b.c.org/", "https://-a.org/", "https://a.org./", "https://a..org/", "https://1.2.3.4/x",
            "https://a.org/ x", "https://a.org/\tx", "https://a.org/\u00e9", "https://\u00e9.org/", "https://a.org/\"",
            "https://[::1]/", "https://[bad", "https://user@a.org/", "https:a.org", "http:/a.org", "ftp://a.org/",
            "javascript:alert(1)", "https://a.org:99999/", " https://a.org/", "https://a.org/\x7f", "", "https://"]
    fast = [report_works.link_url(u) for u in urls]
    monkeypatch.setattr(report_works, "_PLAIN_LINK", re.compile(r"(?!)"))
    assert fast == [report_works.link_url(u) for u in urls]


def test_hours_read_with_useful_precision_and_licenses_by_one_name(tmp_path):
    assert [hours_text(s) for s in (0, 4, 120, 1800, 3600 * 3.456, 3600 * 1234.56)] == [
        "0", "0.0011", "0.033", "0.50", "3.5", "1,234.6"]
    _catalogue(tmp_path / "c.duckdb", [dict(title="a", author="A", license="cc-by-4.0", page_url="https://a.org/1"),
                                       dict(title="b", author="B", page_url="https://a.org/2")])
    with Catalog(tmp_path / "c.duckdb") as cat:
        out = build_report(cat, "r1", tmp_path / "releases")
    folder = pathlib.Path(out["folder"])
    html = (folder / "index.html").read_text(encoding="utf-8")
    md = (folder / "report.md").read_text(encoding="utf-8")
    assert "2 recordings, 0.0011 hours." in html and "2 recordings, 0.0011 hours.**" in md
    assert "| freesound | CC BY 4.0 | `CC-BY-4.0` | 1 | 0.00056 |" in md and ">0.00056</td>" in html
    table = set(re.findall(r"<tr><td>freesound</td><td>([^<]+)</td>", html))
    assert table == {"CC0 1.0", "CC BY 4.0"} == {w["license"] for w in read_part(folder / "works" / "part-0001.js")[1]}
