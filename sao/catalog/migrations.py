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
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
