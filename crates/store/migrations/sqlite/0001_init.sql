-- callpipe's record of calls and of what the pipeline decided.
CREATE TABLE pipeline_versions (
    version     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    source      TEXT NOT NULL,
    loaded_at   REAL NOT NULL
);

CREATE TABLE calls (
    session_id        TEXT PRIMARY KEY,
    call_sid          TEXT,
    technician_id     TEXT NOT NULL DEFAULT '',
    technician_name   TEXT NOT NULL DEFAULT '',
    phone_number      TEXT,
    status            TEXT NOT NULL,
    pipeline_version  TEXT,
    started_at        REAL NOT NULL,
    ended_at          REAL
);
CREATE INDEX calls_by_sid ON calls (call_sid);

CREATE TABLE call_status (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL REFERENCES calls (session_id),
    status      TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX call_status_by_session ON call_status (session_id, id);

CREATE TABLE speakers (
    session_id  TEXT NOT NULL REFERENCES calls (session_id),
    speaker_id  TEXT NOT NULL,
    role        TEXT NOT NULL,
    segments    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, speaker_id)
);

-- One utterance, and its transcript once there is one.
CREATE TABLE segments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL REFERENCES calls (session_id),
    speaker_id  TEXT NOT NULL,
    role        TEXT NOT NULL,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    text        TEXT NOT NULL,
    language    TEXT NOT NULL,
    confidence  REAL NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX segments_by_session ON segments (session_id, id);

CREATE TABLE suggestions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id     TEXT NOT NULL REFERENCES calls (session_id),
    suggestion_id  TEXT NOT NULL,
    title          TEXT NOT NULL,
    content        TEXT NOT NULL,
    sources        TEXT NOT NULL,
    confidence     REAL NOT NULL,
    language       TEXT NOT NULL,
    at             REAL NOT NULL,
    UNIQUE (session_id, suggestion_id)
);

CREATE TABLE questions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id   TEXT NOT NULL REFERENCES calls (session_id),
    question_id  TEXT NOT NULL,
    title        TEXT NOT NULL,
    content      TEXT NOT NULL,
    sources      TEXT NOT NULL,
    language     TEXT NOT NULL,
    at           REAL NOT NULL,
    UNIQUE (session_id, question_id)
);

CREATE TABLE stage_errors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    stage       TEXT NOT NULL,
    message     TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX stage_errors_by_time ON stage_errors (at);

-- Everything the dashboard is shown, in order: the live stream replays it
-- after an id (Last-Event-ID).
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX events_by_session ON events (session_id, id);
