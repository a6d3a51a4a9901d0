-- One database per service (no database is shared between services), and a
-- read-only role for Grafana's audit-trail table on budsjett's read model.
CREATE DATABASE reformspor_ingest;
CREATE DATABASE reformspor_budsjett;
CREATE DATABASE reformspor_milepael;
CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana_reader';
\connect reformspor_budsjett
GRANT USAGE ON SCHEMA public TO grafana_reader;
-- Tables are created later by the budsjett service (as user reformspor).
ALTER DEFAULT PRIVILEGES FOR ROLE reformspor IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
