"""The daily request quota as a budget: throttle messages, the persisted budget, multi-day passes."""
import collections
import datetime as dt
import json

import pytest

from sao.catalog import Catalog
from sao.licensing import canonical_license
from sao.sources.freesound import FreesoundClient, FreesoundError, QuotaExhausted, RetryPolicy
from sao.sources.freesound_crawl import crawl_freesound
from sao.sources.freesound_reconcile import reconcile_freesound
from sao.sources.freesound_quota import (DAY_S, RequestBudget, Throttle, credential_id, days_to_finish, load_budget,
                                         parse_throttle)
from sao.sources.replica import ReplicaServer, ReplicaSettings

SECRET = "quota-token-9d3e1b77"
OTHER = "quota-token-other-51c0"
ALLOWED = {"cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0"}
DAY_MSG = "Request was throttled because of exceeding a request limit rate (2000/day)"
MINUTE_MSG = "Request was throttled because of exceeding a request limit rate (60/minute)"
SUSPENDED_MSG = "Request was throttled because the ApiV2 credential has been suspended"
T0 = 1_800_000_000.0          # a fixed "now" (2027-01-15): simulated days start here


@pytest.fixture(autouse=True)
def _forget_server_blocks():
    """The server's refusals a process has seen are shared by its clients (freesound_quota.note_block);
    these tests move clocks by days, so each starts with none."""
    from sao.sources import freesound_quota
    freesound_quota._SERVER_BLOCKS.clear()
    yield
    freesound_quota._SERVER_BLOCKS.clear()


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def expected_ids(sounds):
    return {str(s["id"]) for s in sounds if canonical_license(s["license"]) in ALLOWED}


def searches(srv):
    return {k: n for k, n in srv.throttle.admitted.items() if k.startswith("/apiv2/search/")}


# -- what a 429 says ------------------------------------------------------------------------------
def test_parse_throttle_reads_the_servers_two_messages_and_nothing_else():
    assert parse_throttle(DAY_MSG) == Throttle("day", 2000)
    assert parse_throttle(MINUTE_MSG) == Throttle("minute", 60)
    assert parse_throttle("Request was throttled because of exceeding a request limit rate (5/hour)") == \
        Throttle("hour", 5)
    assert parse_throttle(SUSPENDED_MSG).fatal
    assert parse_throttle(DAY_MSG).waits_long and not parse_throttle(MINUTE_MSG).waits_long
    # anything else is an ordinary transient 429: unknown period, huge number, not text
    for bad in ("Request was throttled", "Request was throttled because of exceeding a request limit rate "
                "(2000/fortnight)", "Request was throttled because of exceeding a request limit rate "
                "(99999999999/day)", None, 2000, {"detail": DAY_MSG}):
        assert parse_throttle(bad) is None, bad


def test_credential_id_names_a_key_without_revealing_it():
    a = credential_id(SECRET)
    assert a == credential_id(SECRET) and a != credential_id(OTHER)
    assert len(a) == 16 and int(a, 16) >= 0 and SECRET not in a
    with pytest.raises(ValueError):
        credential_id("")


# -- the in-memory budget ---------------------------------------------------------------------------
def test_budget_is_a_sliding_day_window():
    clock = Clock()
    b = RequestBudget(3, clock=clock)
    for _ in range(3):
        assert b.take() is None
        clock.t += 600
    why = b.take()
    assert why is not None and why.scope == "day"
    assert why.next_allowed == int(T0) + 1 + DAY_S        # the oldest request leaves the window
    clock.t = why.next_allowed - 1
    assert b.take() is not None                            # not a second early
    clock.t = why.next_allowed
    assert b.take() is None and b.remaining() == 0
    assert b.used == 4


def test_budget_allowance_refund_and_bad_values():
    b = RequestBudget(100, allowance=2, clock=Clock())
    assert b.take() is None and b.take() is None
    assert b.take().scope == "allowance"
    b.refund()
    assert b.remaining() == 1 and b.take() is None
    for bad in (0, -1, True, 2.5, "2000"):
        with pytest.raises(ValueError):
            RequestBudget(bad)
    with pytest.raises(ValueError):
        RequestBudget(10, allowance=-1)


def test_days_to_finish():
    assert days_to_finish(0, 100, 2000) == 0
    assert days_to_finish(3151, 2000, 2000) == 2          # the paper's scale at level 1: today and tomorrow
    assert days_to_finish(3151, 0, 2000) == 2
    assert days_to_finish(3151, 15000, 15000) == pytest.approx(3151 / 15000)
    assert days_to_finish(5000, 10, 2000) == 1 + 3


# -- the client and the server's 429s ---------------------------------------------------------------
@pytest.fixture
def server(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET, OTHER], rate_limit_per_minute=0)) as s:
        yield s


def client_for(srv, sleeps, token=SECRET, **kw):
    kw.setdefault("rate_limit_per_minute", 10_000)
    return FreesoundClient(srv.api_url, token, sleep=sleeps.append,
                           retry=RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05), **kw)


Q = 'license:"Creative Commons 0"'


def test_a_per_minute_429_is_waited_out_and_retried(server):
    sleeps = []
    c = client_for(server, sleeps)
    server.inject_fault(r"/apiv2/search/", 429, times=2, detail=MINUTE_MSG)
    assert c.search_page(Q)["count"] > 0
    assert c.stats["retries"] == 2 and len(sleeps) == 2
    assert c.budget.used == 1          # the two refused requests were not counted by the server: refunded


def test_a_daily_429_stops_at_once_and_asks_no_more(server):
    sleeps, clock = [], Clock()
    c = client_for(server, sleeps, clock=clock)
    server.inject_fault(r"/apiv2/search/", 429, times=1, detail=DAY_MSG)
    with pytest.raises(QuotaExhausted) as exc:
        c.search_page(Q)
    e = exc.value
    assert e.scope == "day" and e.by_server and not e.transient and sleeps == []
    assert "2000/day" in str(e) and e.next_allowed == pytest.approx(T0 + DAY_S)    # nothing known: a whole day
    before = sum(server.request_counts.values())
    with pytest.raises(QuotaExhausted) as again:
        c.sound(100001)
    assert not again.value.by_server and sum(server.request_counts.values()) == before   # nothing sent
    clock.t += DAY_S + 1
    assert c.search_page(Q)["count"] > 0                 # the next day it goes on


def test_a_suspended_credential_is_fatal_and_clear(server):
    sleeps = []
    c = client_for(server, sleeps)
    server.inject_fault(r"/apiv2/search/", 429, times=5, detail=SUSPENDED_MSG)
    with pytest.raises(FreesoundError, match="credential is suspended") as exc:
        c.search_page(Q)
    assert not isinstance(exc.value, QuotaExhausted) and not exc.value.transient and sleeps == []
    assert SECRET not in str(exc.value)


def test_an_unknown_429_text_is_retried_like_before(server):
    sleeps = []
    c = client_for(server, sleeps)
    server.inject_fault(r"/apiv2/search/", 429, times=1, detail="Request was throttled (2000/fortnight)")
    assert c.search_page(Q)["count"] > 0 and c.stats["retries"] == 1


def test_previews_do_not_count(server, freesound_sounds, tmp_path):
    c = client_for(server, [], requests_per_day=1)
    j = c.sound(freesound_sounds[0]["id"])
    c.download(j["previews"]["preview-hq-mp3"], tmp_path, ext="mp3")
    c.download(j["previews"]["preview-hq-mp3"], tmp_path, ext="mp3")
    assert c.budget.used == 1
    with pytest.raises(QuotaExhausted):
        c.sound(freesound_sounds[1]["id"])


# -- the replica counts a day like freesound.org ------------------------------------------------------
def test_replica_counts_a_sliding_day_and_answers_like_the_server(freesound_sounds):
    import requests
    clock = Clock()
    settings = ReplicaSettings(api_tokens=[SECRET, OTHER], rate_limit_per_minute=2, requests_per_day=3,
                               suspended_tokens=[OTHER], clock=clock)
    with ReplicaServer(freesound_sounds, settings) as srv:
        def get():
            return requests.get(srv.api_url + "/sounds/100001/", headers={"Authorization": f"Token {SECRET}"},
                                timeout=10)
        assert [get().status_code for _ in range(2)] == [200, 200]
        r = get()           # the minute's two are spent: the burst throttle refuses, and counts nothing
        assert r.status_code == 429 and r.json() == {"detail": MINUTE_MSG.replace("60/", "2/")}
        assert "Retry-After" not in r.headers
        clock.t += 61
        assert get().status_code == 200
        clock.t += 61
        r = get()           # three today: the day throttle refuses
        assert r.status_code == 429 and r.json() == {"detail": DAY_MSG.replace("2000/", "3/")}
        assert "Retry-After" not in r.headers
        clock.t = T0 + DAY_S - 1
        assert get().status_code == 429     # the first request of the day is still in the window
        clock.t = T0 + DAY_S + 0.5
        assert get().status_code == 200     # ... and now it has left it
        s = requests.get(srv.api_url + "/sounds/100001/", headers={"Authorization": f"Token {OTHER}"}, timeout=10)
        assert s.status_code == 429 and s.json() == {"detail": SUSPENDED_MSG}
        assert srv.throttle.refused == {"minute": 1, "day": 2, "suspended": 1}
        # previews are the CDN's: never throttled
        assert requests.get(f"{srv.base_url}/previews/100001-hq.mp3", timeout=60).status_code == 200


def test_replica_counts_a_client_once_whether_it_asks_by_key_or_by_oauth_token(freesound_sounds):
    # freesound.org throttles per API client: its key (the client's secret) and the OAuth2 tokens issued
    # to its client id spend one quota, and a refreshed token does not start a new day
    import requests
    clock = Clock()
    settings = ReplicaSettings(api_tokens=[SECRET], oauth_clients={"quota-client": SECRET}, rate_limit_per_minute=0,
                               requests_per_day=3, clock=clock)
    with ReplicaServer(freesound_sounds, settings) as srv:
        srv.oauth.clock = clock
        bearer = srv.oauth.token({"client_id": ["quota-client"], "client_secret": [SECRET],
                                  "grant_type": ["authorization_code"],
                                  "code": [srv.oauth.issue_code("quota-client")]})[1]["access_token"]
        key = {"Authorization": f"Token {SECRET}"}
        by_token = {"Authorization": f"Bearer {bearer}"}
        url = srv.api_url + "/sounds/100001/"
        assert requests.get(url, headers=key, timeout=10).status_code == 200
        assert requests.get(url + "download/", headers=by_token, timeout=10).status_code == 200
        assert requests.get(url, headers=key, timeout=10).status_code == 200
        r = requests.get(url + "download/", headers=by_token, timeout=10)
        assert r.status_code == 429 and r.json() == {"detail": DAY_MSG.replace("2000/", "3/")}


# -- the persisted budget ---------------------------------------------------------------------------
def test_budget_is_shared_by_runs_and_stops_before_the_server_refuses(freesound_sounds, tmp_path):
    clock = Clock()
    settings = ReplicaSettings(api_tokens=[SECRET, OTHER], rate_limit_per_minute=0, requests_per_day=5, clock=clock)
    with ReplicaServer(freesound_sounds, settings) as srv, Catalog(tmp_path / "c.duckdb") as cat:
        first = client_for(srv, [], clock=clock)
        first.budget = load_budget(cat, first.credential_id, per_day=5, per_minute=60, clock=clock)
        for sid in (100001, 100002, 100003):
            first.sound(sid)
        clock.t += 3600
        second = client_for(srv, [], clock=clock)          # another run, same key
        second.budget = load_budget(cat, second.credential_id, per_day=5, per_minute=60, clock=clock)
        assert second.budget.remaining() == 2
        second.sound(100004)
        second.sound(100005)
        with pytest.raises(QuotaExhausted) as exc:
            second.sound(100006)
        assert not exc.value.by_server and exc.value.next_allowed == int(T0) + 1 + DAY_S
        assert srv.throttle.refused == {} and srv.throttled == 0      # the server never had to say no
        assert sum(srv.throttle.admitted.values()) == 5
        # another key has its own budget
        other = client_for(srv, [], token=OTHER, clock=clock)
        other.budget = load_budget(cat, other.credential_id, per_day=5, per_minute=60, clock=clock)
        assert other.budget.remaining() == 5
        other.sound(100001)
        stored = json.dumps(cat.query("SELECT * FROM api_requests"), default=str) + json.dumps(
            cat.api_quotas(), default=str)
        assert SECRET not in stored and OTHER not in stored and credential_id(SECRET) in stored
    assert SECRET.encode() not in (tmp_path / "c.duckdb").read_bytes()


def test_a_server_refusal_is_remembered_by_the_next_run(freesound_sounds, tmp_path):
    from sao.sources.freesound_quota import save_block
    clock = Clock()
    # the server's count is lower than the budget's: another program spends the same key
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0, requests_per_day=2, clock=clock)
    with ReplicaServer(freesound_sounds, settings) as srv, Catalog(tmp_path / "c.duckdb") as cat:
        c = client_for(srv, [], clock=clock)
        c.budget = load_budget(cat, c.credential_id, per_day=2000, per_minute=60, clock=clock)
        c.sound(100001)
        c.sound(100002)
        with pytest.raises(QuotaExhausted) as exc:
            c.sound(100003)
        assert exc.value.by_server and exc.value.next_allowed == int(T0) + 1 + DAY_S
        assert c.budget.used_today() == 2            # the refused request was taken back
        save_block(cat, c.credential_id, exc.value.next_allowed, exc.value.scope, per_day=2000, per_minute=60)
        later = client_for(srv, [], clock=clock)
        later.budget = load_budget(cat, later.credential_id, per_day=2000, per_minute=60, clock=clock)
        n = srv.throttled
        with pytest.raises(QuotaExhausted, match="server refused"):
            later.sound(100003)
        assert srv.throttled == n                    # not asked again
        clock.t = exc.value.next_allowed + 1
        again = client_for(srv, [], clock=clock)
        again.budget = load_budget(cat, again.credential_id, per_day=2000, per_minute=60, clock=clock)
        assert again.sound(100003)["id"] == 100003


# -- multi-day passes -------------------------------------------------------------------------------
def cursors(cat):
    return {r["query_key"]: r["last_created"] for r in cat.query("SELECT * FROM crawl_cursors")}


def run_day(cat, srv, clock, quota, **kw):
    c = client_for(srv, [], clock=clock)
    c.budget = load_budget(cat, c.credential_id, per_day=quota, per_minute=60, clock=clock)
    return c, crawl_freesound(cat, c, page_size=2, commit_every=2, **kw)


def next_day(clock, paused):
    assert paused is not None
    allowed = dt.datetime.strptime(paused["next_allowed"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc).timestamp()
    assert allowed > clock.t
    clock.t = allowed + 1


def test_a_crawl_finishes_over_several_days_with_nothing_lost_or_fetched_twice(freesound_sounds, tmp_path):
    from sao.runs import format_status, freesound_state
    clock, quota = Clock(), 4
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0, requests_per_day=quota, clock=clock)
    want = expected_ids(freesound_sounds)
    with ReplicaServer(freesound_sounds, settings) as srv, Catalog(tmp_path / "c.duckdb") as cat:
        # the incremental crawl, from nothing, over several days
        days, new, history = 0, 0, []
        while True:
            days += 1
            _, st = run_day(cat, srv, clock, quota)
            new += st.new
            history.append(cursors(cat))
            if st.paused is None:
                break
            next_day(clock, st.paused)
        assert days >= 3 and new == len(want)                # each item stored new once: none lost, none twice
        assert {r["source_id"] for r in cat.query("SELECT source_id FROM recordings")} == want
        # a page is asked for once; the only repeat is a finished search's "anything newer?" check,
        # once per later run (new uploads may have come)
        repeats = {k: n for k, n in searches(srv).items() if n > 1}
        assert all(n <= days - 1 and "created%3A%5B" in k for k, n in repeats.items()), repeats
        assert srv.throttle.refused == {}, "the budget should stop before the server refuses"
        # a full pass interrupted by the quota, continued the next days; an incremental run in between
        srv.add_sound(dict(freesound_sounds[0], id=999_001, name="new upload", created="2030-01-01T00:00:00Z"))
        full_days, pass_ids, status_lines = 0, set(), []
        srv.throttle.admitted.clear()
        clock.t += DAY_S + 1                         # a new day's quota for the first day of the pass
        incremental: collections.Counter = collections.Counter()
        while True:
            full_days += 1
            _, st = run_day(cat, srv, clock, quota, full=True)
            pass_ids.add(st.pass_id)
            history.append(cursors(cat))
            if st.paused is None:
                break
            state = {"freesound": freesound_state(cat, requests_per_day=quota, page_size=2, now=clock.t)}
            status_lines.append(state)
            next_day(clock, st.paused)
            if full_days == 1:
                before = collections.Counter(srv.throttle.admitted)
                run_day(cat, srv, clock, quota)      # the scheduled incremental run, on the same day's quota
                incremental = collections.Counter(srv.throttle.admitted) - before
                history.append(cursors(cat))
        assert full_days >= 3 and len(pass_ids) == 1, "the full pass restarted instead of continuing"
        assert incremental, "the incremental run should have asked for something"
        pass_asked = collections.Counter(searches(srv)) - incremental
        assert max(pass_asked.values()) == 1, "the full pass asked for a page twice"
        assert cat.get_recording("freesound:999001") is not None
        assert {r["source_id"] for r in cat.query("SELECT source_id FROM recordings")} == want | {"999001"}
        assert cat.pass_seen(st.pass_id) == want | {"999001"}      # every day's listing kept
        # the incremental cursor never moved backwards, at any point
        for before, after in zip(history, history[1:]):
            for key, t in before.items():
                assert after[key] is not None and (t is None or after[key] >= t), key
        # sao status, mid-pass: progress out of the API's count, requests left, the days to go
        mid = status_lines[0]["freesound"]
        p = mid["passes"][0]
        assert p["kind"] == "full" and p["status"] == "running" and 0 < p["listed"] < p["total"]
        assert p["total"] >= len(want) and not p["total_exact"] and p["days_to_finish"] >= 1
        assert mid["quota"][0]["left_today"] == 0 and mid["quota"][0]["next_allowed"] is not None
        text = format_status([], {"recordings": {}, "license_gate": {}, "with_audio": 0, "pending_download": 0,
                                  "review_queue": {}, "active_takedowns": 0, "latest_release": None,
                                  "freesound": mid})
        assert f"{p['listed']} of at least {p['total']} listed" in text and "day(s) at 4/day" in text
        assert "0 left of 4/day" in text and "next request allowed" in text
        done = freesound_state(cat, requests_per_day=quota, page_size=2, now=clock.t)["passes"][0]
        assert done["status"] == "done" and done["total_exact"] and done["listed"] == done["total"] == len(want) + 1
        assert done["days_to_finish"] == 0


def test_a_reconcile_pass_continues_across_days_and_checks_each_item_once(freesound_sounds, tmp_path):
    clock, quota = Clock(), 5
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0, requests_per_day=quota, clock=clock)
    want = sorted(expected_ids(freesound_sounds), key=int)
    with ReplicaServer(freesound_sounds, settings) as srv, Catalog(tmp_path / "c.duckdb") as cat:
        c = client_for(srv, [])
        crawl_freesound(cat, c)                      # everything known (this client has its own budget)
        gone = [int(s) for s in want[:4]]
        for sid in gone[:3]:
            srv.delete_sound(sid)
        srv.update_sound(gone[3], license="http://creativecommons.org/licenses/by-nc/4.0/",
                         _license_name="Attribution NonCommercial")
        srv.throttle.admitted.clear()
        totals, days = collections.Counter(), 0
        while True:
            days += 1
            c, st = run_day(cat, srv, clock, quota, full=True, pass_kind="reconcile")
            out = None
            if st.paused is None:
                out = reconcile_freesound(cat, c, pass_id=st.pass_id)
                totals.update({k: v for k, v in out.items() if k != "paused"})
            if st.paused is None and "paused" not in out:
                break
            next_day(clock, st.paused or out["paused"])
        assert days >= 3 and totals == {"deleted": 3, "relicensed": 1}
        lookups = {k: n for k, n in srv.throttle.admitted.items() if k.startswith("/apiv2/sounds/")}
        assert len(lookups) == 4 and set(lookups.values()) == {1}, lookups
        assert max(searches(srv).values()) == 1
        assert {t["recording_id"] for t in cat.takedowns()} == {f"freesound:{s}" for s in gone[:3]}
        p = cat.crawl_passes("freesound")[0]
        assert p["kind"] == "reconcile" and p["status"] == "done"
        # a new reconcile starts a new pass; restarting one on purpose abandons it
        c, st2 = run_day(cat, srv, clock, 1000, full=True, pass_kind="reconcile")
        assert st2.pass_id != st.pass_id
        assert cat.abandon_crawl_passes("freesound", "reconcile") == 1


def test_a_full_pass_restarted_on_purpose_lists_from_zero(srv_plain, tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        clock = Clock()
        _, st = run_day(cat, srv_plain, clock, 3, full=True)
        assert st.paused is not None
        assert cat.abandon_crawl_passes("freesound", "full") == 1
        _, st2 = run_day(cat, srv_plain, clock, 10_000, full=True)
        assert st2.paused is None and st2.pass_id != st.pass_id and st2.pass_done
        seen = cat.pass_seen(st2.pass_id)
        assert len(seen) == st2.items                # listed from the start, not from the abandoned cursor
        assert cat.crawl_passes("freesound")[1]["status"] == "abandoned"


@pytest.fixture
def srv_plain(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as s:
        yield s


# -- through the pipeline and `sao status` ----------------------------------------------------------
def test_a_refresh_that_meets_the_quota_pauses_the_crawl_and_goes_on(srv_plain, tmp_path, capsys, monkeypatch):
    from sao import cli
    from sao import config as config_mod
    from sao.pipeline.runner import run_pipeline
    from sao.pipeline.stage import RunOptions
    from tests.conftest import flow_config
    path = flow_config(tmp_path, freesound={"requests_per_day": 5, "page_size": 2, "download": False})
    cfg = config_mod.load(path)
    opts = RunOptions(base_url=srv_plain.api_url, full=True)
    out = run_pipeline(cfg, ["crawl_freesound", "license_gate"], options=opts, secrets={"freesound_token": SECRET},
                       show_progress=False)
    crawl = out["crawl_freesound"]
    assert crawl.errors == {} and crawl.details["paused"]["scope"] == "day"
    assert crawl.details["requests"] == 5 and crawl.details["quota"]["left_today"] == 0
    assert crawl.details["pass"]["kind"] == "full" and not crawl.details["pass"]["listing_done"]
    assert out["license_gate"].items_in == crawl.passed > 0          # later stages ran on what was stored
    # the same day again: nothing is sent, the run still completes
    asked = sum(srv_plain.throttle.admitted.values())
    again = run_pipeline(cfg, ["crawl_freesound"], options=opts, secrets={"freesound_token": SECRET},
                         show_progress=False)["crawl_freesound"]
    assert again.details["paused"] and again.details["requests"] == 0
    assert sum(srv_plain.throttle.admitted.values()) == asked
    with Catalog(cfg.catalog_path) as cat:
        assert [r["status"] for r in cat.query("SELECT status FROM runs")] == ["completed", "completed"]
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    assert cli.main(["--config", str(path), "status"]) == 0
    text = capsys.readouterr().out
    assert "crawl pass      full      running" in text and "0 left of 5/day" in text and "day(s) at 5/day" in text
    assert SECRET not in text
    assert cli.main(["--config", str(path), "status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)["catalogue"]["freesound"]
    assert state["passes"][0]["listed"] == crawl.passed and state["quota"][0]["used_today"] == 5
    assert cli.main(["--config", str(path), "catalog", "restart-pass", "full"]) == 0
    assert "1 running full pass(es) abandoned" in capsys.readouterr().out


def test_config_validates_requests_per_day(tmp_path):
    from sao import config as config_mod
    from tests.conftest import flow_config
    assert config_mod.load(flow_config(tmp_path)).freesound.requests_per_day == 2000
    for bad in (0, -5, 10**9):
        with pytest.raises(config_mod.ConfigError, match="requests_per_day"):
            config_mod.load(flow_config(tmp_path, freesound={"requests_per_day": bad}))
    with pytest.raises(config_mod.ConfigError, match="requests_per_day"):
        config_mod.load(flow_config(tmp_path, freesound={"requests_per_day": "lots"}))


def test_originals_download_plans_only_what_the_day_allows_and_batches_never_overspend(srv_plain, tmp_path,
                                                                                         monkeypatch):
    import time
    from sao import config as config_mod
    from sao.pipeline.runner import run_pipeline
    from sao.pipeline.stage import RunOptions
    from tests.conftest import flow_config
    monkeypatch.setenv("FREESOUND_OAUTH_TOKEN", "sao-demo-oauth")
    path = flow_config(tmp_path, freesound={"requests_per_day": 100, "download": True, "download_originals": True},
                       orchestration={"batch_files": 2})
    cfg = config_mod.load(path)
    opts = RunOptions(base_url=srv_plain.api_url)
    secrets = {"freesound_token": SECRET}
    run_pipeline(cfg, ["crawl_freesound", "license_gate"], options=opts, secrets=secrets, show_progress=False)
    cred = credential_id(SECRET)
    with Catalog(cfg.catalog_path) as cat:
        used = sum(n for _, n in cat.api_request_seconds(cred, 0))
        cat.record_api_requests(cred, [(int(time.time()) - 10, 100 - used - 3)])    # three left today
    srv_plain.inject_fault(r"/download/", 503, times=1)       # one retry: that batch's share runs out
    st = run_pipeline(cfg, ["download"], options=opts, secrets=secrets, show_progress=False)["download"]
    assert st.details["downloaded"] == 2 and st.details["failed"] == 0
    assert st.details["candidates"] == 3          # planned: what the day had left, one request each
    assert st.details["paused"]["scope"] == "day" and st.errors == {}
    with Catalog(cfg.catalog_path) as cat:
        assert sum(n for _, n in cat.api_request_seconds(cred, 0)) == 100       # spent, never more
        left = cat.query("SELECT count(*) AS n FROM gate_admitted WHERE NOT has_audio")[0]["n"]
    assert st.details["deferred_by_quota"] == left
    downloads = {k: n for k, n in srv_plain.throttle.admitted.items() if k.endswith("/download/")}
    assert sum(downloads.values()) == 2 and srv_plain.throttled == 0


def test_the_last_minute_of_an_earlier_run_fills_the_next_clients_minute(tmp_path):
    from sao.sources.freesound import RateLimiter
    from sao.sources.freesound_quota import recent_ages
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.record_api_requests("abc", [(int(T0) - 10, 2), (int(T0) - 3600, 5)])
        ages = recent_ages(cat, "abc", T0)
        assert ages == [9.0, 9.0]                    # only the last minute's, counted as late as can be
    clock = Clock(500.0)
    lim = RateLimiter(3, period=60.0, margin=0.0, clock=clock, sleep=clock.sleep)
    lim.seed(ages)
    lim.acquire()
    assert clock.t == 500.0
    lim.acquire()                                    # the earlier run's two and this one fill the minute
    assert clock.t == pytest.approx(500.0 + 51.0)


def test_the_incremental_cursor_only_moves_forward(catalog):
    t1, t0 = dt.datetime(2026, 12, 1, 16, 26), dt.datetime(2026, 12, 1, 13, 24)
    catalog.advance_cursor("freesound", "k", t1, 1)
    catalog.advance_cursor("freesound", "k", t0, 5)            # an interrupted pass's older watermark
    catalog.advance_cursor("freesound", "k", None, 1)
    assert catalog.get_cursor("freesound", "k")["last_created"] == t1
    catalog.advance_cursor("freesound", "k", t1 + dt.timedelta(seconds=1), 1)
    assert catalog.get_cursor("freesound", "k")["last_created"] > t1


def test_a_hostile_count_only_loses_the_progress_figure():
    from sao.sources.freesound_crawl import _count
    assert _count({"count": 472_618}) == 472_618
    for bad in ("472618", -1, 10**12, True, None, 3.5, [1]):
        assert _count({"count": bad}) is None, bad


def test_crawl_pass_store_refuses_bad_kinds_and_statuses(catalog):
    from sao.catalog import CatalogError
    with pytest.raises(CatalogError, match="kind"):
        catalog.open_crawl_pass("freesound", "partial")
    p = catalog.open_crawl_pass("freesound", "full")
    assert catalog.open_crawl_pass("freesound", "full")["pass_id"] == p["pass_id"]     # continued, not new
    with pytest.raises(CatalogError, match="status"):
        catalog.update_crawl_pass(p["pass_id"], status="paused'; DROP TABLE runs; --")
    with pytest.raises(CatalogError, match="scope"):
        catalog.set_api_quota("abc", 2000, 60, None, "week")


def test_a_server_refusal_mid_crawl_commits_what_was_fetched(freesound_sounds, tmp_path):
    clock = Clock()
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0, requests_per_day=3, clock=clock)
    with ReplicaServer(freesound_sounds, settings) as srv, Catalog(tmp_path / "c.duckdb") as cat:
        c, st = run_day(cat, srv, clock, 2000)             # the budget thinks there is plenty
        assert st.paused["by_server"] and st.paused["scope"] == "day" and srv.throttle.refused == {"day": 1}
        stored = {r["source_id"] for r in cat.query("SELECT source_id FROM recordings")}
        assert len(stored) == st.new > 0 and c.budget.used_today() == 3
        cursor = cursors(cat)['license:"Creative Commons 0"']
        assert cursor is not None
        clock.t = st.paused and c.quota_stop.next_allowed + 1
        _, rest = run_day(cat, srv, clock, 3)
        assert rest.new > 0 and cursors(cat)['license:"Creative Commons 0"'] >= cursor


def test_originals_refused_by_the_server_are_deferred_not_failed(srv_plain, tmp_path, monkeypatch):
    from sao import config as config_mod
    from sao.pipeline.runner import run_pipeline
    from sao.pipeline.stage import RunOptions
    from tests.conftest import flow_config
    monkeypatch.setenv("FREESOUND_OAUTH_TOKEN", "sao-demo-oauth")
    cfg = config_mod.load(flow_config(tmp_path, freesound={"download": True, "download_originals": True}))
    opts, secrets = RunOptions(base_url=srv_plain.api_url), {"freesound_token": SECRET}
    run_pipeline(cfg, ["crawl_freesound", "license_gate"], options=opts, secrets=secrets, show_progress=False)
    srv_plain.throttle.per_day = 1                         # another program spent the key's day but one request
    st = run_pipeline(cfg, ["download"], options=opts, secrets=secrets, show_progress=False)["download"]
    assert st.details["downloaded"] == 1 and st.details["failed"] == 0 and st.errors == {}
    assert st.details["deferred_by_quota"] == st.details["candidates"] - 1
    assert st.details["paused"]["scope"] == "day" and srv_plain.throttle.refused == {"day": 1}   # asked once
    with Catalog(cfg.catalog_path) as cat:
        q = cat.get_api_quota(credential_id(SECRET))
        assert q["blocked_until"] is not None and q["blocked_scope"] == "day"
    again = run_pipeline(cfg, ["download"], options=opts, secrets=secrets, show_progress=False)["download"]
    assert again.details["candidates"] == 0 and again.details["paused"] and srv_plain.throttle.refused == {"day": 1}


def test_crawl_cost_gives_the_readmes_figures():
    from sao.sources.freesound_quota import API_LEVELS, PAPER_FREESOUND_RECORDINGS, crawl_cost
    days = {level: (crawl_cost(PAPER_FREESOUND_RECORDINGS, per_minute=m, per_day=d)["days"],
                    crawl_cost(PAPER_FREESOUND_RECORDINGS, per_minute=m, per_day=d, originals=True)["days"])
            for level, m, d in API_LEVELS}
    assert days == {1: (2, 238), 2: (1, 96), 3: (1, 32)}
    assert crawl_cost(PAPER_FREESOUND_RECORDINGS, per_minute=60, per_day=2000)["requests"] == 3175
