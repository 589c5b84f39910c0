#!/bin/bash
# Demo 3: a head in backoff blocks its key only; a dead-lettered head (continue vs hold); a redriven lower event
# does not run beside its key's in-flight event.
P="psql -h 127.0.0.1 -U postgres ord2 -X"
$P -qc "truncate outbox" -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) select 'order', k, 'E' || n, '{}' from generate_series(1,3) n, unnest(array['K','L','M']) k order by n, k"
claim() { $P -At -F' ' -c "select id, ordering_key from outbox_claim_ordered(10, '30 s', -9223372036854775808, $1) where id is not null order by id"; }
done_() { $P -qc "update outbox set status='COMPLETED', processed_at=now(), lock_token=null, locked_until=null where status='PROCESSING'"; }
echo "-- claim 1:"; claim false
# the relay's retry of K's head (as PgOutboxStore.retry), and dead-letter of L's head
$P -qc "update outbox set status='FAILED', retry_count=retry_count+1, last_error='HTTP 503 from sink', available_at=now()+interval '1 hour', lock_token=null, locked_until=null where status='PROCESSING' and ordering_key='order:K'" \
   -c "update outbox set status='DEAD_LETTER', retry_count=retry_count+1, last_error='400: schema mismatch', processed_at=now(), lock_token=null, locked_until=null where status='PROCESSING' and ordering_key='order:L'"
done_
echo "-- K's head in backoff, L's head dead-lettered; claim (continue mode):"; claim false
$P -qc "update outbox set status='PENDING', lock_token=null, locked_until=null where status='PROCESSING'"
echo "-- same state, hold mode:"; claim true
$P -qc "update outbox set status='PENDING', lock_token=null, locked_until=null where status='PROCESSING'"
echo "-- continue mode: claim L's next event (in flight), then redrive L's dead letter (DEAD_LETTER -> PENDING) and claim:"
claim false | grep order:L
$P -qc "update outbox set status='PENDING', retry_count=0, processed_at=null where status='DEAD_LETTER'"
claim false
$P -c "select id, ordering_key, event_type, status, available_at > now() as not_due from outbox order by ordering_key, id"
