-- The ordered transaction-scoped claim: the same heads, locked FOR UPDATE SKIP LOCKED in the caller's
-- transaction (the row lock is the lease, nothing is written), plus a transaction-scoped lock on each claimed
-- key, so that no other claimer takes any event of the key (a redriven lower one included) until it commits.
CREATE OR REPLACE FUNCTION outbox_claim_ordered_tx(
  p_limit integer,
  p_from bigint DEFAULT -9223372036854775808,  -- the walk's cursor (next_from of the previous claim)
  p_hold boolean DEFAULT false,                -- a dead letter below a head holds the key
  p_window integer DEFAULT 0,                  -- oldest due rows looked at (0: 2 × p_limit)
  p_steps integer DEFAULT 64)                  -- most keys walked when the window falls short
RETURNS TABLE (id bigint, created_at timestamptz, ordering_key text, next_from bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
  v_w bigint;
  v_lanes integer[];
BEGIN
  -- steps 2 and 3 need a snapshot per statement
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'the ordered claim needs READ COMMITTED (it runs in %)', current_setting('transaction_isolation');
  END IF;
  -- 1. every id up to v_w was drawn before step 2 looks at the lanes
  SELECT s.last_value INTO v_w FROM outbox_id_seq s;
  -- 2. the lanes no producer holds now: taken and given back at once, so a producer never waits
  SELECT coalesce(array_agg(l), '{}') INTO v_lanes FROM generate_series(0, 255) l
  WHERE CASE WHEN pg_try_advisory_lock(hashtext('outbox.ordering'), l)
             THEN pg_advisory_unlock(hashtext('outbox.ordering'), l) ELSE false END;
  -- 3. a snapshot taken after step 2: every id <= v_w of a free lane is committed (visible) or rolled back
  RETURN QUERY
  WITH RECURSIVE inflight AS MATERIALIZED (
    -- keys with an event in flight, whatever its id (a redriven lower event waits for it too)
    SELECT DISTINCT hashtextextended(o.ordering_key, 0) AS k FROM outbox o WHERE o.status = 'PROCESSING'
  ), waiting AS MATERIALIZED (
    -- events not yet due: each holds its key above it
    SELECT hashtextextended(o.ordering_key, 0) AS k, min(o.id) AS id FROM outbox o
    WHERE o.status IN ('PENDING', 'FAILED') AND o.available_at > statement_timestamp()
    GROUP BY 1
  ), win AS (
    -- the oldest due events: one range scan of the claimable index, as the unordered claim
    SELECT o.id, o.created_at, hashtextextended(o.ordering_key, 0) AS k FROM outbox o
    WHERE o.status IN ('PENDING', 'FAILED') AND (o.available_at IS NULL OR o.available_at <= statement_timestamp())
    ORDER BY o.id LIMIT CASE WHEN p_window > 0 THEN p_window ELSE 2 * p_limit END
  ), window_heads AS MATERIALIZED (
    -- a key's oldest due event in the window is its head unless it has one in flight or one not yet due below
    SELECT fw.k, fw.id, fw.created_at
    FROM (SELECT DISTINCT ON (wi.k) wi.k, wi.id, wi.created_at FROM win wi ORDER BY wi.k, wi.id) fw
    WHERE NOT EXISTS (SELECT 1 FROM inflight i WHERE i.k = fw.k)
      AND NOT EXISTS (SELECT 1 FROM waiting x WHERE x.k = fw.k AND x.id < fw.id)
      AND fw.id <= v_w AND ((fw.k & 255)::int) = ANY (v_lanes)
      AND (NOT p_hold OR coalesce((
        -- the key's lowest dead letter (outbox_ordering_dead_idx): one below the head holds the key
        SELECT d.id FROM outbox d
        WHERE d.status = 'DEAD_LETTER' AND hashtextextended(d.ordering_key, 0) = fw.k
        ORDER BY hashtextextended(d.ordering_key, 0), d.id LIMIT 1) > fw.id, true))
  ), budget AS (
    -- keys the walk may visit: only what the window could not fill (one key's backlog or blocked keys in front)
    SELECT least(p_steps, p_limit - (SELECT count(*) FROM window_heads))::int AS steps
  ), walk AS (
    -- from the cursor, one index descent per key: its first entry is its head
    SELECT f.k, f.id, f.created_at, f.due, 1 AS steps
    FROM (SELECT hashtextextended(o.ordering_key, 0) AS k, o.id, o.created_at,
                 (o.available_at IS NULL OR o.available_at <= statement_timestamp()) AS due
          FROM outbox o
          WHERE o.status IN ('PENDING', 'FAILED') AND hashtextextended(o.ordering_key, 0) >= p_from
          ORDER BY hashtextextended(o.ordering_key, 0), o.id LIMIT 1) f
    WHERE (SELECT steps FROM budget) > 0
    UNION ALL
    SELECT nx.k, nx.id, nx.created_at, nx.due, wk.steps + 1
    FROM walk wk CROSS JOIN LATERAL (
      SELECT hashtextextended(o.ordering_key, 0) AS k, o.id, o.created_at,
             (o.available_at IS NULL OR o.available_at <= statement_timestamp()) AS due
      FROM outbox o
      WHERE o.status IN ('PENDING', 'FAILED') AND hashtextextended(o.ordering_key, 0) > wk.k
      ORDER BY hashtextextended(o.ordering_key, 0), o.id LIMIT 1) nx
    WHERE wk.steps < (SELECT steps FROM budget)
  ), heads AS (
    SELECT wh.k, wh.id, wh.created_at FROM window_heads wh
    UNION
    SELECT wk.k, wk.id, wk.created_at FROM walk wk
    WHERE wk.due AND NOT EXISTS (SELECT 1 FROM inflight i WHERE i.k = wk.k)
      AND wk.id <= v_w AND ((wk.k & 255)::int) = ANY (v_lanes)
      AND (NOT p_hold OR coalesce((
        SELECT d.id FROM outbox d
        WHERE d.status = 'DEAD_LETTER' AND hashtextextended(d.ordering_key, 0) = wk.k
        ORDER BY hashtextextended(d.ordering_key, 0), d.id LIMIT 1) > wk.id, true))
  ), locked AS (
    SELECT l.id, l.created_at, l.ordering_key
    FROM (SELECT h.id, h.created_at FROM heads h ORDER BY h.id) h
    CROSS JOIN LATERAL (
      SELECT o.id, o.created_at, o.ordering_key FROM outbox o
      WHERE o.id = h.id AND o.created_at = h.created_at
        AND o.status IN ('PENDING', 'FAILED') AND (o.available_at IS NULL OR o.available_at <= statement_timestamp())
        AND pg_try_advisory_xact_lock(hashtext('outbox.ordering.key'), hashtext(o.ordering_key))
      FOR UPDATE OF o SKIP LOCKED) l
    LIMIT p_limit
  ), cursor AS (
    SELECT CASE WHEN max(wk.steps) IS NULL THEN p_from
                WHEN max(wk.steps) < (SELECT steps FROM budget) OR max(wk.k) = 9223372036854775807
                THEN -9223372036854775808 ELSE max(wk.k) + 1 END AS nf
    FROM walk wk
  )
  SELECT c.id, c.created_at, c.ordering_key, (SELECT nf FROM cursor) FROM locked c
  UNION ALL
  SELECT NULL, NULL, NULL, (SELECT nf FROM cursor) WHERE NOT EXISTS (SELECT 1 FROM locked);
END
$fn$;
