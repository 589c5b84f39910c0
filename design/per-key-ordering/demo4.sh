#!/bin/bash
# Demo 4: the transaction-scoped claim (row lock = lease, status stays PENDING), with a redrive during delivery.
P="psql -h 127.0.0.1 -U postgres ord2 -X"
$P -qc "truncate outbox" -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) select 'order', k, 'E' || n, '{}' from generate_series(1,3) n, unnest(array['K','L']) k order by n, k" \
   -c "update outbox set status='DEAD_LETTER', last_error='old failure', processed_at=now() where ordering_key='order:K' and event_type='E1'"
$P -c "select id, ordering_key, event_type, status from outbox order by ordering_key, id"
( $P -c "begin" -c "select id, ordering_key, 'S1 holds (tx claim)' note from outbox_claim_ordered_tx(10)" -c "select pg_sleep(2.5)" \
     -c "update outbox set status='COMPLETED', processed_at=statement_timestamp() where id in (select id from outbox where status='PENDING' and event_type='E2' and ordering_key='order:K' union all select id from outbox where ordering_key='order:L' and event_type='E1')" -c "commit" | sed 's/^/  [S1] /' ) &
sleep 0.7
echo "-- S2 tx-claims while S1 delivers:"
$P -c "begin" -c "select id, ordering_key from outbox_claim_ordered_tx(10)" -c "rollback"
$P -qc "update outbox set status='PENDING', processed_at=null where status='DEAD_LETTER'"
echo "-- K's dead letter E1 redriven while S1 still holds K's E2; S2 tx-claims:"
$P -c "begin" -c "select id, ordering_key from outbox_claim_ordered_tx(10)" -c "rollback"
wait
echo "-- after S1 committed; S2 tx-claims:"
$P -c "begin" -c "select c.id, c.ordering_key, o.event_type from outbox_claim_ordered_tx(10) c join outbox o using (id)" -c "rollback"
