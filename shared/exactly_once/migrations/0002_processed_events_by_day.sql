-- processed_events partitioned by day of its event ids' time (a UUIDv7's first 48 bits are
-- its Unix milliseconds), so that ids past the dedupe window are dropped a day at a time
-- (shared/exactly_once/partitions.py) instead of deleted row by row. The primary key stays the
-- event id alone: an id is unique across every day. The days of the ids there are now, up to
-- two days ahead, are made here; the consumer makes the others as it needs them. Ids that are
-- not UUIDv7, or whose time is over a year off, cannot be placed in a day: not kept (no
-- Tollgate producer writes them). No functions of its own (a service's role may not create
-- temporary ones): the day of an id is spelled out where it is needed.
ALTER TABLE processed_events RENAME TO processed_events_before_days;
ALTER INDEX IF EXISTS processed_events_pkey RENAME TO processed_events_before_days_pkey;
DROP INDEX IF EXISTS processed_events_seen_at;

CREATE TABLE processed_events (
    event_id uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (event_id);

-- The ids that can be placed: UUIDv7 (version digit 7), time within a year back, two days on
-- (the first 12 hex digits are the milliseconds).
DO $$
DECLARE
    first_day date;
    day date;
    low text;
    high text;
BEGIN
    SELECT min(to_timestamp(('x' || substr(replace(event_id::text, '-', ''), 1, 12))::bit(48)::bigint
                            / 1000.0) AT TIME ZONE 'UTC')::date
    INTO first_day
    FROM processed_events_before_days
    WHERE substr(event_id::text, 15, 1) = '7'
      AND ('x' || substr(replace(event_id::text, '-', ''), 1, 12))::bit(48)::bigint
          BETWEEN (extract(epoch FROM now() - interval '365 days') * 1000)::bigint
              AND (extract(epoch FROM now() + interval '2 days') * 1000)::bigint;
    first_day := least(coalesce(first_day, (now() AT TIME ZONE 'UTC')::date),
                       (now() AT TIME ZONE 'UTC')::date);
    day := first_day;
    WHILE day <= (now() AT TIME ZONE 'UTC')::date + 2 LOOP
        low := lpad(to_hex((extract(epoch FROM day::timestamp) * 1000)::bigint), 12, '0');
        high := lpad(to_hex((extract(epoch FROM (day + 1)::timestamp) * 1000)::bigint), 12, '0');
        EXECUTE format(
            'CREATE TABLE %I (LIKE processed_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
            'processed_events_d' || to_char(day, 'YYYYMMDD'));
        EXECUTE format(
            'ALTER TABLE processed_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            'processed_events_d' || to_char(day, 'YYYYMMDD'),
            substr(low, 1, 8) || '-' || substr(low, 9, 4) || '-0000-0000-000000000000',
            substr(high, 1, 8) || '-' || substr(high, 9, 4) || '-0000-0000-000000000000');
        day := day + 1;
    END LOOP;
END
$$;

-- Every id that chose first_day above has its day now (days up to two ahead were made).
INSERT INTO processed_events
SELECT event_id, seen_at FROM processed_events_before_days
WHERE substr(event_id::text, 15, 1) = '7'
  AND ('x' || substr(replace(event_id::text, '-', ''), 1, 12))::bit(48)::bigint
      BETWEEN (extract(epoch FROM now() - interval '365 days') * 1000)::bigint
          AND (extract(epoch FROM now() + interval '2 days') * 1000)::bigint;

DROP TABLE processed_events_before_days;
