#!/usr/bin/env bash
# Usage: scripts/bench-purge.sh [EVENTS]      (default 10000000)
#
# Measures the retention purge (issue 19, part 5) on the project's PostgreSQL: a scratch
# database with Otter's migrations, EVENTS `output_chunk` events of 10,000 jobs that ended 40 days
# ago, and one running job. The purge deletes them exactly as the worker does
# (`otter_core::db::retention::delete_output_batch`: 2,000 rows a statement, 5 ms between
# statements) while a writer appends one event at a time to the running job through
# `otter_insert_events` (what every live write goes through) and times each write. Prints the
# purge's duration and rate, and the writer's latency (p50, p99, max) with and without the purge
# beside it. Not a test: nothing is asserted. The scratch database is dropped at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
EVENTS="${1:-10000000}"
JOBS=10000
PER_JOB=$((EVENTS / JOBS))
scripts/services.sh start >/dev/null
DB="otter_bench_purge_$$"
BASE="${DATABASE_URL%/*}"
URL="$BASE/$DB"
psql -qX "$DATABASE_URL" -c "CREATE DATABASE $DB" >/dev/null
WORK="$(mktemp -d)"
trap 'psql -qX "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
q() { psql -qtAX -v ON_ERROR_STOP=1 "$URL" "$@"; }

for migration in migrations/*.sql; do
  q -1 -f "$migration" >/dev/null
done
WS="$(q -c "INSERT INTO workspaces (id, name, path, vibe_home) VALUES (gen_random_uuid(), 'bench', '/srv/bench', '/srv/bench-home') RETURNING id")"
echo "[bench-purge] filling: $JOBS ended jobs, $PER_JOB output_chunk events each ($EVENTS)" >&2
started=$(date +%s.%N)
q -c "INSERT INTO jobs (id, workspace_id, prompt, status, attempts, max_attempts, created_at, started_at, finished_at)
      SELECT gen_random_uuid(), '$WS', 'old', 'succeeded', 1, 1, now() - interval '41 days',
             now() - interval '41 days', now() - interval '40 days'
      FROM generate_series(1, $JOBS)"
# Event ids are drawn by otter_insert_events from the transaction id (migration 12); the old
# lines get negative ones, below every id a live write draws.
q -c "INSERT INTO events (id, job_id, workspace_id, seq, kind, payload)
      SELECT -row_number() OVER (), j.id, j.workspace_id, s, 'output_chunk',
             jsonb_build_object('stream', 'stdout', 'text', 'line ' || s || ' of a run that ended long ago')
      FROM jobs j CROSS JOIN generate_series(1, $PER_JOB) AS s"
q -c "VACUUM ANALYZE events" -c "VACUUM ANALYZE jobs"
filled=$(date +%s.%N)
echo "[bench-purge] filled in $(echo "$filled - $started" | bc) s" >&2
LIVE="$(q -c "INSERT INTO jobs (id, workspace_id, prompt, status, attempts, max_attempts, started_at,
                                worker_id, lease_token, lease_expires_at)
              VALUES (gen_random_uuid(), '$WS', 'live', 'running', 1, 1, now(), 'bench',
                      gen_random_uuid(), now() + interval '1 day') RETURNING id")"

# writer N OUT: N single-event writes to the live job, each timed (ms, one a line).
writer() {
  local n=$1 out=$2
  {
    echo '\timing on'
    for _ in $(seq 1 "$n"); do
      echo "SELECT otter_insert_events('$LIVE', '$WS', NULL, ARRAY['output_chunk'], ARRAY['{\"stream\":\"stdout\",\"text\":\"live\"}'::jsonb]);"
    done
  } | psql -qtAX "$URL" 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' >"$out"
}
stats() {
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1];
    printf "%d writes: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", NR, p50, p99, v[NR] }'
}

writer 2000 "$WORK/alone"
echo "[bench-purge] writer alone: $(stats "$WORK/alone")" >&2

# The purge, as the worker runs it: the same statements (db::retention), each committed on its
# own, 5 ms between deletes; in a procedure, so that no client round trip is measured.
q -c "CREATE PROCEDURE bench_purge() AS \$\$
DECLARE
    v_job uuid;
    v_n bigint;
BEGIN
    LOOP
        SELECT j.id INTO v_job FROM jobs j
        WHERE j.finished_at IS NOT NULL AND NOT j.events_purged
          AND j.finished_at < now() - interval '30 days'
          AND j.status IN ('succeeded', 'failed', 'cancelled')
        ORDER BY j.finished_at LIMIT 1;
        EXIT WHEN v_job IS NULL;
        LOOP
            DELETE FROM events WHERE id IN (
                SELECT e.id FROM events e JOIN jobs j ON j.id = e.job_id
                WHERE e.job_id = v_job AND e.kind = 'output_chunk' AND j.finished_at IS NOT NULL
                LIMIT 2000);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            COMMIT;
            EXIT WHEN v_n < 2000;
            PERFORM pg_sleep(0.005);
        END LOOP;
        UPDATE jobs SET events_purged = true WHERE id = v_job AND finished_at IS NOT NULL;
        COMMIT;
    END LOOP;
END;
\$\$ LANGUAGE plpgsql"
before="$(q -c "SELECT count(*) FROM events WHERE kind = 'output_chunk' AND job_id <> '$LIVE'")"
purge() {
  q -c "CALL bench_purge()" >/dev/null
}
purge_start=$(date +%s.%N)
purge &
PURGE=$!
: >"$WORK/during"
while kill -0 "$PURGE" 2>/dev/null; do
  writer 500 "$WORK/batch"
  cat "$WORK/batch" >>"$WORK/during"
done
wait "$PURGE"
purge_end=$(date +%s.%N)
secs="$(echo "$purge_end - $purge_start" | bc)"
left="$(q -c "SELECT count(*) FROM events WHERE kind = 'output_chunk' AND job_id <> '$LIVE'")"
live="$(q -c "SELECT count(*) FROM events WHERE job_id = '$LIVE'")"
deleted=$((before - left))
echo "[bench-purge] purged $deleted events of $JOBS jobs in $secs s ($(echo "$deleted / $secs" | bc) events/s); $left left; the live job has $live events"
echo "[bench-purge] writer alone:        $(stats "$WORK/alone")"
echo "[bench-purge] writer beside purge: $(stats "$WORK/during")"
