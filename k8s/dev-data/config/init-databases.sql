-- Run once by the postgres image on an empty data volume: one database per service
-- (ARCHITECTURE.md: a database belongs to one service). `migrate` creates them too if missing.
CREATE DATABASE auth;
CREATE DATABASE orders;
