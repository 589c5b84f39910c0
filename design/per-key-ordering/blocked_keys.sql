-- Blocked keys: keys whose head cannot be delivered now, one row per key, with why, since when and what waits.
--   backoff     the head failed and waits out its backoff (available_at)
--   scheduled   the head is a PENDING event published for later
--   dead_letter hold mode: the key's lowest dead letter, with events behind it (until a redrive)
--   lease       the head is in flight on a lease that expired (the key waits for the reaper)
WITH not_due AS (
  SELECT DISTINCT ON (hashtextextended(o.ordering_key, 0)) hashtextextended(o.ordering_key, 0) AS k, o.*
  FROM outbox o
  WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at > now()
  ORDER BY hashtextextended(o.ordering_key, 0), o.id
), heads AS (
  SELECT n.k, n.ordering_key, n.id, n.status, n.created_at, n.retry_count, n.max_retries, n.last_error,
         CASE n.status WHEN 'FAILED' THEN 'backoff' ELSE 'scheduled' END AS reason,
         n.claimed_at AS since, n.available_at AS until
  FROM not_due n
  -- the key's head (a later event scheduled for later blocks nothing yet)
  WHERE n.id = (SELECT p.id FROM outbox p
                WHERE p.status IN ('PENDING', 'FAILED') AND hashtextextended(p.ordering_key, 0) = n.k
                ORDER BY hashtextextended(p.ordering_key, 0), p.id LIMIT 1)
  UNION ALL
  SELECT d.k, d.ordering_key, d.id, d.status, d.created_at, d.retry_count, d.max_retries, d.last_error,
         'dead_letter', d.processed_at, NULL
  FROM (SELECT DISTINCT ON (hashtextextended(o.ordering_key, 0)) hashtextextended(o.ordering_key, 0) AS k, o.*
        FROM outbox o WHERE o.status = 'DEAD_LETTER'
        ORDER BY hashtextextended(o.ordering_key, 0), o.id) d
  -- with an event behind it (one index probe: a scalar subquery, not a semi-join over every pending row)
  WHERE :hold AND (SELECT p.id FROM outbox p
                   WHERE p.status IN ('PENDING', 'FAILED') AND hashtextextended(p.ordering_key, 0) = d.k AND p.id > d.id
                   ORDER BY hashtextextended(p.ordering_key, 0), p.id LIMIT 1) IS NOT NULL
  UNION ALL
  SELECT hashtextextended(o.ordering_key, 0), o.ordering_key, o.id, o.status, o.created_at, o.retry_count, o.max_retries,
         o.last_error, 'lease', o.locked_until, NULL
  FROM outbox o WHERE o.status = 'PROCESSING' AND o.locked_until < now()
)
SELECT h.reason, h.ordering_key, h.id AS head_id, h.status AS head_status,
       now() - h.created_at AS head_age,
       now() - h.since AS blocked_for,         -- since the last attempt began / the dead letter / the lease ran out
       h.until AS next_attempt_at,
       h.retry_count, h.max_retries, left(h.last_error, 200) AS last_error,
       (SELECT count(*) FROM (SELECT 1 FROM outbox b
                              WHERE b.status IN ('PENDING', 'FAILED') AND hashtextextended(b.ordering_key, 0) = h.k
                                AND b.id > h.id
                              ORDER BY hashtextextended(b.ordering_key, 0), b.id LIMIT 100) x) AS waiting_behind  -- capped at 100
FROM heads h
ORDER BY h.created_at
LIMIT :lim;
