-- Migration 0008_ordering (draft): the ordering key, the id drawn under the key's lane lock, and the indexes of the
-- ordered claim. For the table `outbox` and its sequence `outbox_id_seq`.

-- 1. The key. Nullable: catalog-only on a table of any size; every row inserted from now on gets one (trigger),
--    active rows of before get one below; completed rows of before keep NULL (never a head again).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS ordering_key text;
COMMENT ON COLUMN outbox.ordering_key IS
  'Ordering key: aggregate_type || '':'' || aggregate_id unless published with one (outbox_ordering_insert sets it)';

-- 2. The trigger: the default key, and the id drawn under a shared lock on the key's lane (one of 256), held
--    until the producing transaction ends. Any producer (this library, @outbox/client, plain SQL, COPY) goes
--    through it; an explicit id (an online migration's copy) is kept and takes no lock.
CREATE OR REPLACE FUNCTION outbox_ordering_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  granted text;
BEGIN
  IF NEW.ordering_key IS NULL THEN
    NEW.ordering_key := NEW.aggregate_type || ':' || NEW.aggregate_id;
  END IF;
  IF NEW.id IS NULL THEN
    -- a relay that finds the lane free knows that every id of the key drawn before is committed or rolled back
    granted := pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('outbox.ordering'),
                 (pg_catalog.hashtextextended(NEW.ordering_key, 0) & 255)::int);
    NEW.id := pg_catalog.nextval(TG_ARGV[0]::regclass);
  END IF;
  RETURN NEW;
END
$fn$;
-- the id comes from the trigger, under the lane lock (a column default would draw it before the lock)
ALTER TABLE outbox ALTER COLUMN id DROP DEFAULT;
DROP TRIGGER IF EXISTS outbox_ordering_insert ON outbox;
CREATE TRIGGER outbox_ordering_insert BEFORE INSERT ON outbox
  FOR EACH ROW EXECUTE FUNCTION outbox_ordering_insert('outbox_id_seq');

-- 3. Active rows of before get their key (CREATE TRIGGER waited for every open producer: no row escapes both).
UPDATE outbox SET ordering_key = aggregate_type || ':' || aggregate_id
WHERE ordering_key IS NULL AND status IN ('PENDING', 'FAILED', 'PROCESSING', 'DEAD_LETTER');

-- 4. Indexes. All partial and keyed by the 64-bit hash of the key (16 bytes an entry whatever the key's length,
--    no collation; a collision only makes two keys wait for each other).
-- each key's head is its first entry (the walk of the ordered claim; the blocked-keys view)
CREATE INDEX IF NOT EXISTS outbox_ordering_idx ON outbox (hashtextextended(ordering_key, 0), id)
  WHERE status IN ('PENDING', 'FAILED');
-- hold mode: a dead letter below a head holds its key
CREATE INDEX IF NOT EXISTS outbox_ordering_dead_idx ON outbox (hashtextextended(ordering_key, 0), id)
  WHERE status = 'DEAD_LETTER';
-- events not yet due (backoff, schedule): the keys they hold
CREATE INDEX IF NOT EXISTS outbox_ordering_waiting_idx ON outbox (available_at)
  WHERE status IN ('PENDING', 'FAILED') AND available_at IS NOT NULL;
