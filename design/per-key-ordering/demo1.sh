#!/bin/bash
# Demo 1: transaction A draws K's id first and commits last; B's later id of K must not overtake it.
P="psql -h 127.0.0.1 -U postgres ord2 -X"
$P -qc "truncate outbox" -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) values ('order','other','Other','{}')"
( $P -c "begin" -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) values ('order','K','First','{}') returning id, ordering_key, 'A: inserted, still open' as note" -c "select pg_sleep(3)" -c "commit" | grep -v "^$" | sed 's/^/  [A] /' ) &
sleep 0.7
$P -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) values ('order','K','Second','{}') returning id, ordering_key, 'B: inserted and committed' as note" | sed 's/^/  [B] /'
sleep 0.3
echo "-- claimer while A is open: what a naive 'lowest visible id per key' sees as K's head"
$P -c "select distinct on (ordering_key) id, ordering_key, event_type from outbox where status in ('PENDING','FAILED') order by ordering_key, id"
echo "-- the ordered claim while A is open (lane of order:K busy):"
$P -c "select id, ordering_key, next_from from outbox_claim_ordered(10, '30 s')"
wait
echo "-- after A committed:"
$P -c "select o.id, o.ordering_key, x.event_type from outbox_claim_ordered(10, '30 s') o join outbox x using (id)"
$P -qc "update outbox set status = 'COMPLETED', lock_token = null, locked_until = null, processed_at = now() where status = 'PROCESSING'"
echo "-- after completing it:"
$P -c "select o.id, o.ordering_key, x.event_type from outbox_claim_ordered(10, '30 s') o join outbox x using (id)"
