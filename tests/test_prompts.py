"""One test per prompt rule of paper section 3.2, plus its distribution over many draws."""
import collections
import re

from sao.prompts import PromptInputs, build_prompt
from sao.prompts.builder import CASES, PromptConfig, clean_text, title_case

FMA = PromptInputs("fma", title="pizza hangover", year="2021", genres=("Electronic", "Experimental", "Noise"),
                   album="can't play instruments", artist="dadabots")
FS = PromptInputs("freesound", title="Flowing water", description="Loop of a mountain stream. See https://x.y/z",
                  tags=("water", "stream", "ambience", "field-recording"))
N = 4000


def draws(inp, n=N, seed=7):
    return [build_prompt(inp, seed=seed, key="k", epoch=e) for e in range(n)]


def test_deterministic_for_seed_item_epoch():
    assert build_prompt(FMA, seed=1, key="fma:2", epoch=3) == build_prompt(FMA, seed=1, key="fma:2", epoch=3)
    variants = {build_prompt(FMA, seed=1, key="fma:2", epoch=e) for e in range(50)}
    assert len(variants) > 20
    by_seed = {build_prompt(FMA, seed=s, key="fma:2") for s in range(20)}
    by_key = {build_prompt(FMA, seed=1, key=f"fma:{k}") for k in range(20)}
    assert len(by_seed) > 5 and len(by_key) > 5


def test_every_prompt_is_a_non_empty_subset_of_the_metadata():
    vocab = {"pizza", "hangover", "2021", "electronic", "experimental", "noise", "can't", "play", "instruments",
             "dadabots", "year:", "genres:", "album:", "title:", "artist:"}
    for p in draws(FMA, 500):
        words = {w.strip(",").lower() for w in p.split()}
        assert p and words <= vocab, p


def test_fma_half_of_prompts_carry_the_metadata_type():
    labelled = [bool(re.search(r"(year|genres|album|title|artist): ", p, re.I)) for p in draws(FMA)]
    assert abs(sum(labelled) / N - 0.5) < 0.03
    assert any(p.lower().startswith(("year: 2021", "artist: dadabots")) for p in draws(FMA, 200))


def test_random_subset_and_order_of_fields():
    counts = collections.Counter()
    firsts = collections.Counter()
    for p in draws(FMA):
        low = p.lower()
        present = [f for f, toks in (("year", ["2021"]), ("artist", ["dadabots"]), ("title", ["pizza hangover"]),
                                     ("album", ["can't play instruments"]),
                                     ("genres", ["experimental", "electronic", "noise"])) if any(t in low for t in toks)]
        counts[len(present)] += 1
        firsts[low.split(",")[0].replace("artist: ", "").replace("year: ", "")[:4]] += 1
    assert counts[0] == 0
    assert len(counts) >= 4                      # 1 to 5 fields occur
    assert len(firsts) >= 4                      # different fields lead


def test_list_values_are_shuffled_and_subsetted():
    orders = collections.Counter()
    for p in draws(FS):
        tags = [t.strip() for t in p.lower().split(",") if t.strip() in {"water", "stream", "ambience", "field-recording"}]
        if len(tags) >= 2:
            orders[tuple(tags)] += 1
    assert len(orders) > 10


def test_case_transforms_are_uniform():
    seen = collections.Counter()
    for p in draws(FS):
        if p == p.upper() and p != p.lower():
            seen["upper"] += 1
        elif p == p.lower():
            seen["lower"] += 1
        elif p == title_case(p) and p != p.upper():
            seen["title-or-as-is"] += 1
        else:
            seen["as-is"] += 1
    assert abs(seen["upper"] / N - 0.25) < 0.03
    assert abs(seen["lower"] / N - 0.25) < 0.04
    cfg = PromptConfig(case_weights=(0, 0, 1, 0))
    assert all(build_prompt(FS, seed=1, key="k", epoch=e, cfg=cfg).isupper() for e in range(50))
    assert CASES == ("as-is", "lower", "upper", "title")


def test_freesound_prompts_use_description_title_tags_and_drop_urls():
    ps = draws(FS, 1000)
    assert any("mountain stream" in p.lower() for p in ps)
    assert any("flowing water" in p.lower() for p in ps)
    assert any("ambience" in p.lower() for p in ps)
    assert not any("http" in p.lower() or "x.y" in p for p in ps)
    assert clean_text("a <b>bold</b> https://u.rl   claim", 100) == "a bold claim"


def test_title_case_keeps_apostrophes():
    assert title_case("can't play") == "Can't Play"


def test_empty_metadata_gives_empty_prompt():
    assert build_prompt(PromptInputs("freesound"), seed=0, key="k") == ""
    assert build_prompt(PromptInputs("fma", genres=("",)), seed=0, key="k") == ""
