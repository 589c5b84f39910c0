#!/bin/bash
# Demo 2: two claimers. S1's claim is still uncommitted (its rows locked, PROCESSING not yet visible) while S2 claims.
P="psql -h 127.0.0.1 -U postgres ord2 -X"
$P -qc "truncate outbox" -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) select 'order', k, 'E' || n, '{}' from generate_series(1,3) n, unnest(array['K','L']) k order by n, k"
$P -c "select id, ordering_key, event_type from outbox order by id"
( $P -c "begin" -c "select id, ordering_key, 'S1 claimed, not committed' note from outbox_claim_ordered(1, '30 s')" -c "select pg_sleep(2)" -c "commit" | sed 's/^/  [S1] /' ) &
sleep 0.7
echo "-- S2 claims (limit 10) while S1's claim of order:K's head is uncommitted:"
$P -c "select id, ordering_key from outbox_claim_ordered(10, '30 s')"
wait
echo "-- S2 claims again after S1 committed (both keys in flight):"
$P -c "select id, ordering_key from outbox_claim_ordered(10, '30 s')"
$P -c "select id, ordering_key, status from outbox order by id"
