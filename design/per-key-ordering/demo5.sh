#!/bin/bash
# Demo 5: why "claim rows whose inserting xid is below the snapshot's xmin" is not enough.
P="psql -h 127.0.0.1 -U postgres ord2 -X"
$P -qc "truncate outbox"
( $P -c "begin" -c "select pg_current_xact_id() as r_xid, 'R: wrote something first (xid assigned)' as note" -c "select pg_sleep(1)" \
     -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) values ('order','K','FromR','{}') returning id as r_id" -c commit | sed 's/^/  [R] /' ) &
sleep 0.4
( $P -c "begin" -c "insert into outbox (aggregate_type, aggregate_id, event_type, payload) values ('order','K','FromA','{}') returning id as a_id, pg_current_xact_id() as a_xid" -c "select pg_sleep(2.5)" -c commit | sed 's/^/  [A] /' ) &
sleep 1.6
echo "-- claimer, R committed, A still open:"
$P -c "select id, event_type, xmin as inserting_xid, pg_snapshot_xmin(pg_current_snapshot()) as snapshot_xmin, xmin::text::bigint < pg_snapshot_xmin(pg_current_snapshot())::text::bigint as naive_rule_says_safe from outbox"
$P -c "select id, ordering_key from outbox_claim_ordered(10, '30 s') where id is not null" 
wait
