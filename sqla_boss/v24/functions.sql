-- pg-boss schema version 24: the two plpgsql functions every pg-boss and sqla_boss instance calls to
-- create and delete queues. Written for sqla_boss from the behaviour of pg-boss 10.4 (see PGBOSS10.md
-- section 1.8-1.10); the per-partition objects, their names and definitions match pg-boss's exactly.
--
-- Placeholders, filled by sqla_boss.schema.function_ddl() with a validated schema name:
--   {schema}          the schema as a quoted identifier, for static SQL
--   {schema_literal}  the schema as a quoted string literal, for format('%I') in dynamic SQL

CREATE FUNCTION {schema}.create_queue(queue_name text, options json)
RETURNS void
LANGUAGE plpgsql
AS $create_queue$
DECLARE
  -- The partition is named after a digest of the queue name, so any queue name makes a valid table name.
  part text := 'j' || encode(sha224(queue_name::bytea), 'hex');
  inserted_on timestamptz;
BEGIN
  INSERT INTO {schema}.queue (
    name, policy, retry_limit, retry_delay, retry_backoff,
    expire_seconds, retention_minutes, dead_letter, partition_name
  )
  VALUES (
    queue_name,
    options ->> 'policy',
    (options ->> 'retryLimit')::int,
    (options ->> 'retryDelay')::int,
    (options ->> 'retryBackoff')::bool,
    (options ->> 'expireInSeconds')::int,
    (options ->> 'retentionMinutes')::int,
    options ->> 'deadLetter',
    part
  )
  ON CONFLICT DO NOTHING
  RETURNING created_on INTO inserted_on;

  -- The queue already existed: leave it, and its settings, as they are.
  IF inserted_on IS NULL THEN
    RETURN;
  END IF;

  EXECUTE format('CREATE TABLE %I.%I (LIKE %I.job INCLUDING DEFAULTS)', {schema_literal}, part, {schema_literal});
  EXECUTE format('ALTER TABLE %I.%I ADD PRIMARY KEY (name, id)', {schema_literal}, part);
  EXECUTE format(
    'ALTER TABLE %I.%I ADD CONSTRAINT q_fkey FOREIGN KEY (name) REFERENCES %I.queue (name) '
    'ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED',
    {schema_literal}, part, {schema_literal});
  EXECUTE format(
    'ALTER TABLE %I.%I ADD CONSTRAINT dlq_fkey FOREIGN KEY (dead_letter) REFERENCES %I.queue (name) '
    'ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED',
    {schema_literal}, part, {schema_literal});
  -- short: one created job per singleton key
  EXECUTE format(
    'CREATE UNIQUE INDEX %I ON %I.%I (name, COALESCE(singleton_key, %L)) '
    'WHERE state = %L AND policy = %L',
    part || '_i1', {schema_literal}, part, '', 'created', 'short');
  -- singleton: one active job per singleton key
  EXECUTE format(
    'CREATE UNIQUE INDEX %I ON %I.%I (name, COALESCE(singleton_key, %L)) '
    'WHERE state = %L AND policy = %L',
    part || '_i2', {schema_literal}, part, '', 'active', 'singleton');
  -- stately: one job per singleton key in each of created, retry and active
  EXECUTE format(
    'CREATE UNIQUE INDEX %I ON %I.%I (name, state, COALESCE(singleton_key, %L)) '
    'WHERE state <= %L AND policy = %L',
    part || '_i3', {schema_literal}, part, '', 'active', 'stately');
  -- throttling and debouncing: one job per time slot and key, in any state but cancelled
  EXECUTE format(
    'CREATE UNIQUE INDEX %I ON %I.%I (name, singleton_on, COALESCE(singleton_key, %L)) '
    'WHERE state <> %L AND singleton_on IS NOT NULL',
    part || '_i4', {schema_literal}, part, '', 'cancelled');
  -- fetch support
  EXECUTE format(
    'CREATE INDEX %I ON %I.%I (name, start_after) INCLUDE (priority, created_on, id) WHERE state < %L',
    part || '_i5', {schema_literal}, part, 'active');
  EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT cjc CHECK (name = %L)', {schema_literal}, part, queue_name);
  EXECUTE format('ALTER TABLE %I.job ATTACH PARTITION %I.%I FOR VALUES IN (%L)',
    {schema_literal}, {schema_literal}, part, queue_name);
END;
$create_queue$;

CREATE FUNCTION {schema}.delete_queue(queue_name text)
RETURNS void
LANGUAGE plpgsql
AS $delete_queue$
DECLARE
  part text;
BEGIN
  -- Deleting the row cascades to the queue's schedule and subscriptions. It fails while the partition
  -- holds any job (q_fkey is ON DELETE RESTRICT), as pg-boss's does.
  DELETE FROM {schema}.queue WHERE name = queue_name RETURNING partition_name INTO part;
  EXECUTE format('DROP TABLE IF EXISTS %I.%I', {schema_literal}, part);
END;
$delete_queue$;
