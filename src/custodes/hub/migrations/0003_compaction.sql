-- Minute rows are not kept for ever: a year of the city is ~420 M of them. Past a window
-- (hub/compaction.py) they are deleted, their figures staying in coverage_hourly and
-- coverage_gaps (kept by the trigger of 0002 when each row arrived). What must not happen: a
-- minute delivered again after its row was deleted (a site replaying its outbox) counted a
-- second time, since ON CONFLICT no longer sees it. So each compacted hour remembers which of
-- its 60 minutes were summed and deleted: bit (minute - hour * 60) of ``minutes``.
CREATE TABLE coverage_compacted (
    site TEXT NOT NULL REFERENCES sites(name),
    hour BIGINT NOT NULL,                    -- Unix time / 3600
    minutes BIGINT NOT NULL,                 -- bit i: minute hour * 60 + i was summed, deleted
    PRIMARY KEY (site, hour)
);

-- Per site and minute, the seconds and camera-minutes of its coverage row, without the JSON:
-- the overview's 24 h start inside an hour, whose minutes it summed by expanding every
-- camera's JSON value (up to 59 minutes x 1000 cameras a request: 70 of the overview's
-- ~220 ms at load 10). Kept by the trigger below, deleted with the rows by compaction.
CREATE TABLE coverage_minutes (
    site TEXT NOT NULL REFERENCES sites(name),
    minute BIGINT NOT NULL,                  -- Unix time / 60 (coverage.seq)
    seconds DOUBLE PRECISION NOT NULL,
    camera_minutes INTEGER NOT NULL,
    PRIMARY KEY (site, minute) INCLUDE (seconds, camera_minutes)
);

-- What a hub upgraded in place holds for the last two days (the pages read the last 25 h).
INSERT INTO coverage_minutes (site, minute, seconds, camera_minutes)
SELECT c.site, c.seq, COALESCE(sum(e.value::double precision), 0), count(e.key)
FROM coverage c LEFT JOIN LATERAL jsonb_each_text(c.cameras) e ON true
WHERE c.seq >= (extract(epoch FROM now()) / 60)::bigint - 2 * 1440
GROUP BY c.site, c.seq;

-- As 0002's, less the minutes an earlier row already counted before compaction deleted it,
-- and keeping coverage_minutes.
-- The bits are read by a query of their own, after the INSERT that fired the trigger: a
-- compaction deleting that very minute makes the INSERT wait for it (the primary key), and
-- once it has committed its bit is seen here (READ COMMITTED: a new snapshot per query).
CREATE OR REPLACE FUNCTION custodes_coverage_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO coverage_hourly (site, hour, seconds, camera_minutes)
    SELECT n.site, n.seq / 60, COALESCE(sum(e.value::double precision), 0), count(e.key)
    FROM new_rows n LEFT JOIN LATERAL jsonb_each_text(n.cameras) e ON true
    WHERE NOT EXISTS (SELECT 1 FROM coverage_compacted k WHERE k.site = n.site
                      AND k.hour = n.seq / 60
                      AND (k.minutes >> (n.seq - n.seq / 60 * 60)::int) & 1 = 1)
    GROUP BY n.site, n.seq / 60
    ON CONFLICT (site, hour) DO UPDATE SET
        seconds = coverage_hourly.seconds + EXCLUDED.seconds,
        camera_minutes = coverage_hourly.camera_minutes + EXCLUDED.camera_minutes;
    INSERT INTO coverage_minutes (site, minute, seconds, camera_minutes)
    SELECT n.site, n.seq, COALESCE(sum(e.value::double precision), 0), count(e.key)
    FROM new_rows n LEFT JOIN LATERAL jsonb_each_text(n.cameras) e ON true
    GROUP BY n.site, n.seq
    ON CONFLICT DO NOTHING;
    INSERT INTO coverage_gaps (site, minute, camera, seconds)
    SELECT n.site, n.seq, e.key, e.value::double precision
    FROM new_rows n, jsonb_each_text(n.cameras) e
    WHERE e.value::double precision < 55
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- /metrics counted every event and audit entry at each scrape (0.6-2.3 s with a year of the
-- city). The counts per site, kept by the database from the rows really inserted (ON CONFLICT
-- DO NOTHING leaves a duplicate out of new_rows), read in one index scan, and per site so that
-- a user limited to some municipalities gets their sums.
CREATE TABLE site_counts (
    site TEXT PRIMARY KEY REFERENCES sites(name),
    events BIGINT NOT NULL DEFAULT 0,
    audit_entries BIGINT NOT NULL DEFAULT 0
);

CREATE FUNCTION custodes_count_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO site_counts (site, events) SELECT site, count(*) FROM new_rows GROUP BY site
    ON CONFLICT (site) DO UPDATE SET events = site_counts.events + EXCLUDED.events;
    RETURN NULL;
END $$;
CREATE TRIGGER events_count AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION custodes_count_events();

CREATE FUNCTION custodes_count_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO site_counts (site, audit_entries)
    SELECT site, count(*) FROM new_rows GROUP BY site
    ON CONFLICT (site) DO UPDATE SET
        audit_entries = site_counts.audit_entries + EXCLUDED.audit_entries;
    RETURN NULL;
END $$;
CREATE TRIGGER audit_entries_count AFTER INSERT ON audit_entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION custodes_count_audit();

-- What a hub upgraded in place holds already (events are never deleted by the hub, audit
-- entries cannot be).
INSERT INTO site_counts (site, events, audit_entries)
SELECT s.name, (SELECT count(*) FROM events e WHERE e.site = s.name),
       (SELECT count(*) FROM audit_entries a WHERE a.site = s.name)
FROM sites s;
