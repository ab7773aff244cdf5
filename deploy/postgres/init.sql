-- docker-compose only: one PostgreSQL server standing in for the five that
-- production runs (deploy/postgres/clusters.yaml). Each service gets its own
-- database and its own login role owning it, so a service cannot read or
-- write another's store, as in production.
-- Runs once, when the postgres-data volume is empty.
CREATE ROLE intake LOGIN PASSWORD 'intake';
CREATE DATABASE intake OWNER intake;

CREATE ROLE verify LOGIN PASSWORD 'verify';
CREATE DATABASE verify OWNER verify;

CREATE ROLE classify LOGIN PASSWORD 'classify';
CREATE DATABASE classify OWNER classify;

CREATE ROLE notify LOGIN PASSWORD 'notify';
CREATE DATABASE notify OWNER notify;

CREATE ROLE console LOGIN PASSWORD 'console';
CREATE DATABASE console OWNER console;
