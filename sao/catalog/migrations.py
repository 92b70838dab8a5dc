"""Versioned schema migrations. Append new ones; never edit one that has shipped.

Each migration runs in its own transaction and is recorded in ``schema_migrations``, so a
database created by any earlier version upgrades in place and keeps its rows.
Foreign keys are enforced in code: DuckDB refuses upserts on referenced rows.
"""
from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "core tables: recordings, decisions, takedowns, releases", """
CREATE TABLE recordings (
    recording_id      VARCHAR PRIMARY KEY,          -- '<source>:<source_id>'
    source            VARCHAR NOT NULL CHECK (source IN ('freesound', 'fma', 'local')),
    source_id         VARCHAR NOT NULL,
    title             VARCHAR,
    author            VARCHAR,
    description       VARCHAR,
    tags              VARCHAR[],
    duration          DOUBLE,
    sample_rate       INTEGER,
    channels          INTEGER,
    license_raw       VARCHAR,                      -- as crawled (URL or name), never rewritten
    license_canonical VARCHAR NOT NULL,             -- sao.licensing.canonical_license(license_raw)
    license_url       VARCHAR,
    page_url          VARCHAR,
    audio_url         VARCHAR,
    preview_url       VARCHAR,
    md5               VARCHAR,
    content_sha256    VARCHAR,
    audio_path        VARCHAR,
    created_at        TIMESTAMP,                    -- upload time at the source
    crawl_time        TIMESTAMP NOT NULL,           -- last time the crawl saw it
    first_seen        TIMESTAMP NOT NULL,
    extra             JSON,
    UNIQUE (source, source_id)
);
CREATE SEQUENCE decision_seq START 1;
CREATE TABLE decisions (
    decision_id       BIGINT PRIMARY KEY DEFAULT nextval('decision_seq'),
    recording_id      VARCHAR NOT NULL,
    stage             VARCHAR NOT NULL,
    verdict           VARCHAR NOT NULL CHECK (verdict IN ('pass', 'reject', 'review', 'flag')),
    reason            VARCHAR NOT NULL,
    model_name        VARCHAR,
    checkpoint_sha256 VARCHAR,
    threshold         DOUBLE,
    uncalibrated      BOOLEAN NOT NULL DEFAULT FALSE,
    config_hash       VARCHAR NOT NULL,
    details           JSON,
    decided_at        TIMESTAMP NOT NULL
);
CREATE INDEX decisions_by_recording ON decisions (recording_id, stage);
CREATE SEQUENCE takedown_seq START 1;
CREATE TABLE takedowns (
    takedown_id       BIGINT PRIMARY KEY DEFAULT nextval('takedown_seq'),
    recording_id      VARCHAR NOT NULL,
    reason            VARCHAR NOT NULL,
    requested_by      VARCHAR,
    received_at       TIMESTAMP NOT NULL,
    status            VARCHAR NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'withdrawn'))
);
CREATE TABLE releases (
    name              VARCHAR PRIMARY KEY,
    content_sha256    VARCHAR NOT NULL,
    n_recordings      INTEGER NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    notes             VARCHAR
);
CREATE TABLE release_items (
    release_name      VARCHAR NOT NULL,
    recording_id      VARCHAR NOT NULL,
    license_canonical VARCHAR NOT NULL,
    attribution       JSON,
    admitted_by       JSON,                         -- decision ids that admitted the item
    PRIMARY KEY (release_name, recording_id)
);
"""),
    (2, "crawl cursors and flow-run summaries", """
CREATE TABLE crawl_cursors (
    source            VARCHAR NOT NULL,
    query_key         VARCHAR NOT NULL,             -- e.g. the license filter of one search
    last_created      TIMESTAMP,
    next_page         INTEGER NOT NULL DEFAULT 1,
    updated_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (source, query_key)
);
CREATE TABLE runs (
    run_id            VARCHAR PRIMARY KEY,
    flow              VARCHAR NOT NULL,
    started_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP,
    status            VARCHAR NOT NULL,
    items_in          BIGINT,
    passed            BIGINT,
    rejected          JSON,                         -- {reason: count}
    throughput        JSON,                         -- {"items_per_s": .., "audio_s_per_s": ..}
    config_hash       VARCHAR
);
"""),
    (3, "which audio variant is stored (original or preview)", """
ALTER TABLE recordings ADD COLUMN audio_variant VARCHAR;
"""),
    (4, "copyright review queue and the catalogue of copyrighted recordings", """
CREATE SEQUENCE review_seq START 1;
CREATE TABLE review_queue (
    review_id         BIGINT PRIMARY KEY DEFAULT nextval('review_seq'),
    recording_id      VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL CHECK (kind IN ('content-detection', 'metadata-match')),
    status            VARCHAR NOT NULL CHECK (status IN ('pending', 'submitted', 'cleared', 'flagged')),
    service           VARCHAR,
    service_ref       VARCHAR,
    evidence          JSON,                         -- the service's matches, or the catalogue rows
    created_at        TIMESTAMP NOT NULL,
    submitted_at      TIMESTAMP,
    updated_at        TIMESTAMP NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        VARCHAR,
    decided_by        VARCHAR,
    decided_at        TIMESTAMP,
    note              VARCHAR
);
CREATE TABLE copyright_catalogue (
    entry_id          VARCHAR PRIMARY KEY,
    artist            VARCHAR,
    title             VARCHAR NOT NULL,
    album             VARCHAR,
    year              INTEGER,
    source            VARCHAR,
    artist_norm       VARCHAR,
    title_norm        VARCHAR NOT NULL
);
"""),
    (5, "groups of repeated recordings", """
CREATE TABLE duplicate_groups (
    group_id          VARCHAR NOT NULL,             -- the kept member's recording id
    recording_id      VARCHAR NOT NULL,
    kept              BOOLEAN NOT NULL,
    link              VARCHAR NOT NULL,             -- 'exact' (same bytes or md5) or 'near' (embedding)
    similarity        DOUBLE,                       -- cosine to the kept member, when embedded
    run_at            TIMESTAMP NOT NULL,
    PRIMARY KEY (recording_id)
);
"""),
    (6, "releases: versions, attribution columns, and why each excluded recording was left out", """
ALTER TABLE releases ADD COLUMN version INTEGER;
ALTER TABLE releases ADD COLUMN required_stages VARCHAR[];
ALTER TABLE releases ADD COLUMN config_hash VARCHAR;
ALTER TABLE releases ADD COLUMN exclusions JSON;            -- {reason: n} over the catalogue at release time
ALTER TABLE release_items ADD COLUMN source VARCHAR;
ALTER TABLE release_items ADD COLUMN source_id VARCHAR;
ALTER TABLE release_items ADD COLUMN title VARCHAR;
ALTER TABLE release_items ADD COLUMN author VARCHAR;
ALTER TABLE release_items ADD COLUMN license_url VARCHAR;
ALTER TABLE release_items ADD COLUMN url VARCHAR;
ALTER TABLE release_items ADD COLUMN attribution_line VARCHAR;
ALTER TABLE release_items ADD COLUMN duration DOUBLE;
ALTER TABLE release_items ADD COLUMN sample_rate INTEGER;
ALTER TABLE release_items ADD COLUMN channels INTEGER;
ALTER TABLE release_items ADD COLUMN tags VARCHAR[];
ALTER TABLE release_items ADD COLUMN content_sha256 VARCHAR;
CREATE TABLE release_exclusions (
    release_name      VARCHAR NOT NULL,
    recording_id      VARCHAR NOT NULL,
    reason            VARCHAR NOT NULL,                 -- sao.attribution.policy.EXCLUSION_REASONS
    detail            VARCHAR,
    PRIMARY KEY (release_name, recording_id)
);
"""),
    (7, "catalogue identity and richer flow-run summaries", """
-- one random id per catalogue: cached task results are keyed by it, so a fresh catalogue
-- never inherits results computed for another one
CREATE TABLE catalog_meta (
    key               VARCHAR PRIMARY KEY,
    value             VARCHAR NOT NULL
);
INSERT INTO catalog_meta VALUES ('instance_id', md5(CAST(uuid() AS VARCHAR) || CAST(now() AS VARCHAR)));
ALTER TABLE runs ADD COLUMN flow_run_id VARCHAR;    -- the Prefect flow run, when one ran it
ALTER TABLE runs ADD COLUMN task_runner VARCHAR;    -- thread, dask or ray (and its workers)
ALTER TABLE runs ADD COLUMN duration_s DOUBLE;
ALTER TABLE runs ADD COLUMN stages JSON;            -- {stage: its stats}
ALTER TABLE runs ADD COLUMN cache_hits INTEGER;     -- task runs answered from the persisted cache
ALTER TABLE runs ADD COLUMN error VARCHAR;          -- why a failed run failed (no secrets: see sao.runs)
"""),
    (8, "one admission rule: latest decisions, active take-downs, probed audio, admission views", """
-- what the stored file itself says (sao.audio.probe at the decode stage); crawled metadata
-- (duration, sample_rate, channels) is kept as the source wrote it and decides nothing
ALTER TABLE recordings ADD COLUMN audio_duration DOUBLE;
ALTER TABLE recordings ADD COLUMN audio_sample_rate INTEGER;
ALTER TABLE recordings ADD COLUMN audio_channels INTEGER;

CREATE VIEW latest_decisions AS
SELECT * FROM decisions
QUALIFY row_number() OVER (PARTITION BY recording_id, stage ORDER BY decision_id DESC) = 1;

CREATE VIEW active_takedowns AS
SELECT DISTINCT recording_id FROM takedowns WHERE status = 'active';

-- One row per recording with everything the admission rule reads. A decision counts only while
-- what it judged is still what the catalogue holds (otherwise the stage has not decided yet):
--  * a license_gate decision, while the license, the FMA title and license URL and the
--    gen_ai_preference it read (details.inputs) are the recording's current ones, so a re-crawl
--    that relicenses or opts out an item blocks it at once, before the gate runs again;
--  * a decision about the audio (decode, music_screen, copyright_review, dedup) that names its
--    content (details.content_sha256), while that is the stored content; new audio is judged again.
--    A decision that names no content (an FMA metadata review, older catalogues' rejects) counts.
-- "decoded" also needs the probed facts themselves: a pass whose facts were cleared is redone.
CREATE VIEW recording_state AS
WITH l AS (
  SELECT d.recording_id, d.stage, d.verdict, d.reason, d.decision_id, d.details
  FROM latest_decisions d JOIN recordings r USING (recording_id)
  WHERE CASE
    -- (each input the decision recorded is compared; one it did not record, e.g. license_url in
    -- decisions older than this migration, is not)
    WHEN d.stage = 'license_gate' THEN
      (NOT coalesce(json_exists(d.details, '$.inputs.license'), false)
       OR json_extract_string(d.details, '$.inputs.license') IS NOT DISTINCT FROM r.license_raw)
      AND (NOT coalesce(json_exists(d.details, '$.inputs.license_url'), false)
           OR json_extract_string(d.details, '$.inputs.license_url') IS NOT DISTINCT FROM r.license_url)
      AND (NOT coalesce(json_exists(d.details, '$.inputs.license_title'), false)
           OR json_extract_string(d.details, '$.inputs.license_title')
              IS NOT DISTINCT FROM json_extract_string(r.extra, '$.license_title'))
      AND (NOT coalesce(json_exists(d.details, '$.inputs.gen_ai_preference'), false)
           OR coalesce(CAST(json_extract(d.details, '$.inputs.gen_ai_preference') AS VARCHAR), 'null')
              = coalesce(CAST(json_extract(r.extra, '$.gen_ai_preference') AS VARCHAR), 'null'))
    WHEN d.stage IN ('decode', 'music_screen', 'copyright_review', 'dedup') THEN
      json_extract_string(d.details, '$.content_sha256') IS NULL
      OR json_extract_string(d.details, '$.content_sha256') IS NOT DISTINCT FROM r.content_sha256
    ELSE true
  END),
per AS (
  SELECT recording_id,
         list(stage ORDER BY stage) AS stages, list(verdict ORDER BY stage) AS verdicts,
         list(decision_id ORDER BY stage) AS ids,
         any_value(verdict) FILTER (WHERE stage = 'license_gate') AS gate_verdict,
         any_value(reason) FILTER (WHERE stage = 'license_gate') AS gate_reason,
         any_value(verdict) FILTER (WHERE stage = 'record') AS record_verdict,
         any_value(reason) FILTER (WHERE stage = 'record') AS record_reason,
         any_value(verdict) FILTER (WHERE stage = 'audio') AS audio_verdict,
         any_value(reason) FILTER (WHERE stage = 'audio') AS audio_reason,
         any_value(verdict) FILTER (WHERE stage = 'decode') AS decode_verdict,
         any_value(reason) FILTER (WHERE stage = 'decode') AS decode_reason,
         any_value(verdict) FILTER (WHERE stage = 'music_screen') AS screen_verdict,
         any_value(reason) FILTER (WHERE stage = 'music_screen') AS screen_reason,
         any_value(verdict) FILTER (WHERE stage = 'copyright_review') AS review_verdict,
         any_value(reason) FILTER (WHERE stage = 'copyright_review') AS review_reason,
         any_value(verdict) FILTER (WHERE stage = 'dedup') AS dedup_verdict,
         any_value(reason) FILTER (WHERE stage = 'dedup') AS dedup_reason
  FROM l GROUP BY recording_id)
SELECT r.recording_id, r.source, r.content_sha256, r.audio_path IS NOT NULL AS has_audio,
       t.recording_id IS NOT NULL AS taken_down, per.* EXCLUDE (recording_id),
       -- never NULL: a NULL here would read as "not corrupt" and "not pending" (admitted)
       coalesce(per.decode_verdict = 'pass' AND r.content_sha256 IS NOT NULL AND r.audio_duration IS NOT NULL,
                false) AS decoded,
       coalesce(per.audio_verdict = 'reject' OR per.decode_verdict = 'reject', false) AS corrupt
FROM recordings r LEFT JOIN per USING (recording_id) LEFT JOIN active_takedowns t USING (recording_id);

-- What a stage after the license gate may work on: admitted by the gate, a well-formed record,
-- not taken down. (Downloads and the FMA metadata review start here.)
CREATE VIEW gate_admitted AS
SELECT * FROM recording_state
WHERE gate_verdict = 'pass' AND record_verdict IS DISTINCT FROM 'reject' AND NOT taken_down;

-- ... and with stored audio that decodes: what the music screen, the content review and the
-- CLAP embeddings read. Nothing reads audio that the decode stage has not passed.
CREATE VIEW playable AS
SELECT * FROM gate_admitted WHERE has_audio AND decoded AND NOT corrupt;

-- THE admission rule. For REQUIRED (the release's or the shards' required stages; the license
-- gate and decode are always required) one row per recording: reason NULL when admitted, else
-- the first reason that applies, in sao.attribution.policy.EXCLUSION_REASONS order, and its detail.
CREATE MACRO admission(required) AS TABLE
WITH s AS (
  SELECT *, list_distinct(list_concat(['license_gate', 'decode'], required)) AS req FROM recording_state),
b AS (
  SELECT *,
    list_filter(req, lambda x: list_position(stages, x) IS NULL
                         OR verdicts[list_position(stages, x)] <> 'pass') AS blocking
  FROM s),
c AS (
  SELECT *,
    CASE
      WHEN taken_down THEN 'take-down'
      WHEN gate_verdict IS NOT NULL AND gate_verdict <> 'pass' AND gate_reason LIKE 'opt-out%' THEN 'opt-out'
      WHEN gate_verdict IS NOT NULL AND gate_verdict <> 'pass' THEN 'license'
      WHEN record_verdict = 'reject' THEN 'malformed'
      WHEN corrupt THEN 'corrupt'
      WHEN list_contains(blocking, 'copyright_review') AND review_verdict = 'reject' THEN 'review-rejected'
      WHEN (list_contains(blocking, 'copyright_review') AND review_verdict IN ('review', 'flag'))
        OR (list_contains(blocking, 'music_screen') AND screen_verdict IN ('review', 'flag')) THEN 'music-flagged'
      WHEN list_contains(blocking, 'dedup') AND dedup_verdict = 'reject' THEN 'duplicate'
      WHEN NOT has_audio THEN 'no-audio'
      WHEN len(blocking) > 0 OR NOT decoded THEN 'pending'
      WHEN len(blocking) = 0 AND decoded THEN NULL
      ELSE 'pending'                        -- unknown state: never admitted by accident
    END AS reason
  FROM b)
SELECT recording_id, reason,
  CASE reason
    WHEN 'take-down' THEN ''
    WHEN 'opt-out' THEN gate_reason
    WHEN 'license' THEN gate_reason
    WHEN 'malformed' THEN record_reason
    WHEN 'corrupt' THEN coalesce(CASE WHEN audio_verdict = 'reject' THEN audio_reason END, decode_reason)
    WHEN 'review-rejected' THEN review_reason
    WHEN 'music-flagged' THEN coalesce(CASE WHEN review_verdict IN ('review', 'flag') THEN review_reason END,
                                       screen_reason)
    WHEN 'duplicate' THEN dedup_reason
    WHEN 'no-audio' THEN 'no stored audio'
    WHEN 'pending' THEN list_aggregate(list_transform(list_sort(list_distinct(list_concat(blocking,
                          CASE WHEN decoded THEN [] ELSE ['decode'] END))),
                          lambda x: x || ': ' || coalesce(verdicts[list_position(stages, x)] || ' (not pass)',
                                                     'no decision yet')), 'string_agg', '; ')
  END AS detail,
  list_transform(list_sort(req), lambda x: {'stage': x, 'decision_id': ids[list_position(stages, x)]}) AS admitted_by
FROM c;

CREATE MACRO admitted(required) AS TABLE
SELECT r.*, a.admitted_by FROM admission(required) a JOIN recordings r USING (recording_id)
WHERE a.reason IS NULL;
"""),
    (9, "a take-down follows the audio, not only the id", """
-- A take-down names a recording, but what must stay out is its audio: the same bytes under another
-- id (an entry renamed in a local folder's metadata, a re-upload) are taken down too. Every view
-- and the admission rule read this one, so the rule is still defined once (recording_state).
CREATE OR REPLACE VIEW active_takedowns AS
WITH direct AS (SELECT DISTINCT recording_id FROM takedowns WHERE status = 'active'),
     audio AS (SELECT DISTINCT r.content_sha256 FROM recordings r JOIN direct USING (recording_id)
               WHERE r.content_sha256 IS NOT NULL)
SELECT recording_id FROM direct
UNION
SELECT r.recording_id FROM recordings r JOIN audio USING (content_sha256);
"""),
    (10, "the Freesound request quota and multi-day crawl passes", """
-- Requests sent to the Freesound API, per credential and second (a sliding day window is summed from
-- these; rows older than two days are pruned). credential_id is a salted sha256 prefix, never a token.
CREATE TABLE api_requests (
    credential_id     VARCHAR NOT NULL,
    second            BIGINT NOT NULL,              -- Unix time, whole seconds
    requests          INTEGER NOT NULL CHECK (requests > 0),
    PRIMARY KEY (credential_id, second)
);
-- The rates a credential was run at, and when the server (or the budget) said the day was spent.
CREATE TABLE api_quota (
    credential_id     VARCHAR PRIMARY KEY,
    requests_per_day  INTEGER NOT NULL,
    requests_per_minute INTEGER NOT NULL,
    blocked_until     TIMESTAMP,                    -- UTC; no request before this (NULL: none)
    blocked_scope     VARCHAR,                      -- 'day' | 'hour' (the throttle that refused)
    updated_at        TIMESTAMP NOT NULL
);
-- A full listing or a reconcile that may take several days: its own cursors, and what it has seen.
CREATE TABLE crawl_passes (
    pass_id           VARCHAR PRIMARY KEY,
    source            VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL CHECK (kind IN ('full', 'reconcile')),
    status            VARCHAR NOT NULL CHECK (status IN ('running', 'done', 'abandoned')),
    started_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP,
    listing_done      BOOLEAN NOT NULL DEFAULT FALSE,
    checked_through   BIGINT,                       -- reconcile: the last source id checked (ids in order)
    details           JSON
);
CREATE TABLE crawl_pass_cursors (
    pass_id           VARCHAR NOT NULL,
    query_key         VARCHAR NOT NULL,
    last_created      TIMESTAMP,
    next_page         INTEGER NOT NULL DEFAULT 1,
    total             BIGINT,                       -- the API's count on the pass's first page
    done              BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (pass_id, query_key)
);
CREATE TABLE crawl_pass_seen (
    pass_id           VARCHAR NOT NULL,
    source_id         VARCHAR NOT NULL,
    query_key         VARCHAR NOT NULL,             -- the search that listed it first in this pass
    PRIMARY KEY (pass_id, source_id)
);
"""),
    (11, "releases record the model use they were built for", """
-- [policy].model_use (sao.licensing.model_use) when the release was made: it decided which Freesound
-- gen_ai_preference values admitted a recording, so it is what the release may be used for.
-- NULL for releases made before model uses existed.
ALTER TABLE releases ADD COLUMN model_use VARCHAR;
"""),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
