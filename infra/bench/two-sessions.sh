#!/usr/bin/env bash
# Issue 15's hand experiment: what two cores give two sessions, without the tool.
# Two COPYs at once against one after the other, then two index builds at once against
# one after the other, on the same data, inside a postgres:15 container of the project's
# compose file (so no host pipe is measured). It starts and
# destroys its own Compose project (hsexp15).
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMPOSE_PROJECT_NAME=hsexp15 HINDSIGHT_DB_PORT=55435 POSTGRES_PASSWORD=exp
dc() { docker compose -f infra/postgres/docker-compose.yml "$@"; }
psqlc() { dc exec -T -u postgres db psql -X -q -U user -d hindsight_db "$@"; }
dc up -d >/dev/null 2>&1
until dc exec -T db pg_isready -h 127.0.0.1 >/dev/null 2>&1; do sleep 1; done; sleep 2
until psqlc -c 'select 1' >/dev/null 2>&1; do sleep 1; done
psqlc <<'SQL'
DROP TABLE IF EXISTS a, b;
CREATE TABLE a (id bigint, filler text, n int, at timestamptz);
CREATE TABLE b (id bigint, filler text, n int, at timestamptz);
INSERT INTO a SELECT g, repeat(md5(g::text), 4), g % 1000, now() FROM generate_series(1, 2000000) g;
INSERT INTO b SELECT g, repeat(md5(g::text), 4), g % 1000, now() FROM generate_series(1, 2000000) g;
SQL
psqlc -c "select pg_size_pretty(pg_total_relation_size('a')), pg_size_pretty(pg_total_relation_size('b'))"
dc exec -T -u postgres db sh -c 'pg_dump -U user -a -t a hindsight_db > /tmp/a.sql; pg_dump -U user -a -t b hindsight_db > /tmp/b.sql; ls -la /tmp/a.sql /tmp/b.sql'
dc exec -T -u postgres db nproc
for round in 1 2 3; do
  psqlc -c 'TRUNCATE a, b; CHECKPOINT'
  s=$(date +%s.%N)
  dc exec -T -u postgres db sh -c 'cat /tmp/a.sql /tmp/b.sql | psql -X -q -U user -d hindsight_db >/dev/null'
  serial=$(echo "$(date +%s.%N) - $s" | bc)
  psqlc -c 'TRUNCATE a, b; CHECKPOINT'
  s=$(date +%s.%N)
  dc exec -T -u postgres db sh -c 'psql -X -q -U user -d hindsight_db -f /tmp/a.sql >/dev/null & psql -X -q -U user -d hindsight_db -f /tmp/b.sql >/dev/null & wait'
  parallel=$(echo "$(date +%s.%N) - $s" | bc)
  echo "round $round: one session ${serial} s, two sessions ${parallel} s, ratio $(echo "scale=3; $parallel / $serial" | bc)"
done
for round in 1 2 3; do
  psqlc -c 'DROP INDEX IF EXISTS a_i, b_i; CHECKPOINT'
  s=$(date +%s.%N)
  psqlc -c 'CREATE INDEX a_i ON a (filler)' -c 'CREATE INDEX b_i ON b (filler)'
  serial=$(echo "$(date +%s.%N) - $s" | bc)
  psqlc -c 'DROP INDEX a_i, b_i; CHECKPOINT'
  s=$(date +%s.%N)
  dc exec -T -u postgres db sh -c 'psql -X -q -U user -d hindsight_db -c "CREATE INDEX a_i ON a (filler)" & psql -X -q -U user -d hindsight_db -c "CREATE INDEX b_i ON b (filler)" & wait'
  parallel=$(echo "$(date +%s.%N) - $s" | bc)
  echo "index round $round: one session ${serial} s, two sessions ${parallel} s, ratio $(echo "scale=3; $parallel / $serial" | bc)"
done
dc down -v -t 1 >/dev/null 2>&1
