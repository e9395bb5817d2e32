-- Hosts sharing this database: each renews a lease while it runs, and the
-- calls it runs name it, so a host that restarts interrupts only its own
-- unfinished calls and a host that died is noticed by the others.
CREATE TABLE hosts (
    host_id      TEXT PRIMARY KEY,
    -- Where the other hosts reach it (chat and controls are forwarded).
    address      TEXT NOT NULL DEFAULT '',
    started_at   DOUBLE PRECISION NOT NULL,
    lease_until  DOUBLE PRECISION NOT NULL
);
ALTER TABLE calls ADD COLUMN host_id TEXT;
CREATE INDEX calls_unfinished ON calls (host_id) WHERE ended_at IS NULL;
-- Which host stored an event: a host relays the others' events to its
-- own listeners.
ALTER TABLE events ADD COLUMN host_id TEXT;
