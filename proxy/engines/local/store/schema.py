"""The task store's tables (see store.py for what each holds). Bump SCHEMA_VERSION and
migrate in ``Store.open`` when they change."""

from __future__ import annotations

# 2: tasks.headers holds one name or value per line (header_codec.py); schema 1 files hold
# JSON there, which is still read, so opening one only raises the number, and an earlier
# ingest-proxy then refuses the file instead of failing on the new rows.
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    request_id TEXT NOT NULL,
    eta REAL NOT NULL,
    visible_at REAL NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    responses INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (queue, visible_at);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (queue);
CREATE INDEX IF NOT EXISTS tasks_leased ON tasks (leased) WHERE leased = 1;
CREATE TABLE IF NOT EXISTS dead_letters (
    dl INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    request_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt_at REAL,
    last_status INTEGER,
    last_error TEXT,
    died_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, dl);
CREATE TABLE IF NOT EXISTS dedup (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_created ON dedup (created_at);
CREATE TABLE IF NOT EXISTS paused (
    queue TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    queue TEXT PRIMARY KEY,
    tasks INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
