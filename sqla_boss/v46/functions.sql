-- The functions of pg-boss schema version 46, in our own words (PGBOSS12.md sections 1.14 to 1.16).
-- Filled by sqla_boss.v46.ddl.function_ddl(): the quoted schema name, and the statements that make a
-- partitioned queue's table (sqla_boss/v46/job_table.py).

CREATE FUNCTION {schema}.job_now() RETURNS timestamptz
LANGUAGE sql STABLE
AS $body$ SELECT pg_catalog.now() $body$;

-- A DDL command written against <schema>.job, turned to one job table: ".job" as a whole word becomes that
-- table, a job_iN index name becomes <table>_iN, and format() then fills %I, %L or %s with the table's name.
CREATE FUNCTION {schema}.job_table_format(command text, table_name text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $body$
  SELECT format(
    regexp_replace(
      regexp_replace(command, '\.job\M', '.' || quote_ident(table_name), 'g'),
      '\mjob_i(\d+)', table_name || '_i\1', 'g'),
    table_name)
$body$;

-- Run a command on one job table (by its name, or by its queue's), or on job_common and every partitioned
-- queue's table when neither is known.
CREATE FUNCTION {schema}.job_table_run(command text, tbl_name text DEFAULT NULL, queue_name text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $body$
DECLARE
  target text := tbl_name;
  each_table text;
BEGIN
  IF queue_name IS NOT NULL THEN  -- the queue's table; none when the queue is unknown
    SELECT q.table_name INTO target FROM {schema}.queue q WHERE q.name = queue_name;
  END IF;
  IF target IS NOT NULL THEN
    EXECUTE {schema}.job_table_format(command, target);
    RETURN;
  END IF;
  FOR each_table IN
    SELECT 'job_common' UNION ALL (SELECT q.table_name FROM {schema}.queue q WHERE q.partition ORDER BY q.name)
  LOOP
    EXECUTE {schema}.job_table_format(command, each_table);
  END LOOP;
END
$body$;

-- Like job_table_run, but file each command as a pending row of bam, to be built later.
CREATE FUNCTION {schema}.job_table_run_async(
  command_name text, version integer, command text, tbl_name text DEFAULT NULL, queue_name text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
AS $body$
DECLARE
  target text := tbl_name;
BEGIN
  IF queue_name IS NOT NULL THEN  -- the queue's table; none when the queue is unknown
    SELECT q.table_name INTO target FROM {schema}.queue q WHERE q.name = queue_name;
  END IF;
  IF target IS NOT NULL THEN
    INSERT INTO {schema}.bam (name, version, queue, table_name, command)
    VALUES (command_name, version, queue_name, target, {schema}.job_table_format(command, target));
    RETURN;
  END IF;
  INSERT INTO {schema}.bam (name, version, queue, table_name, command)
  VALUES (command_name, version, NULL, 'job_common', {schema}.job_table_format(command, 'job_common'));
  INSERT INTO {schema}.bam (name, version, queue, table_name, command)
  SELECT command_name, version, q.name, q.table_name, {schema}.job_table_format(command, q.table_name)
  FROM {schema}.queue q WHERE q.partition ORDER BY q.name;
END
$body$;

-- Make a queue from pg-boss's camelCase options; an existing queue is left as it is. A partitioned queue
-- gets its own job table, attached to job.
CREATE FUNCTION {schema}.create_queue(queue_name text, options jsonb) RETURNS void
LANGUAGE plpgsql
AS $body$
DECLARE
  partitioned boolean := coalesce((options ->> 'partition')::boolean, false);
  queue_policy text := options ->> 'policy';
  tbl text := CASE WHEN coalesce((options ->> 'partition')::boolean, false)
                   THEN 'j' || encode(sha224(queue_name::bytea), 'hex') ELSE 'job_common' END;
  made timestamptz;
BEGIN
  INSERT INTO {schema}.queue (
    name, policy, retry_limit, retry_delay, retry_backoff, retry_delay_max, expire_seconds, retention_seconds,
    deletion_seconds, warning_queued, dead_letter, partition, table_name, heartbeat_seconds, notify,
    created_on, updated_on
  ) VALUES (
    queue_name,
    queue_policy,
    coalesce((options ->> 'retryLimit')::int, 2),
    coalesce((options ->> 'retryDelay')::int, 0),
    coalesce((options ->> 'retryBackoff')::boolean, false),
    (options ->> 'retryDelayMax')::int,
    coalesce((options ->> 'expireInSeconds')::int, 900),
    coalesce((options ->> 'retentionSeconds')::int, 1209600),
    coalesce((options ->> 'deleteAfterSeconds')::int, 604800),
    coalesce((options ->> 'warningQueueSize')::int, 0),
    options ->> 'deadLetter',
    partitioned,
    tbl,
    (options ->> 'heartbeatSeconds')::int,
    coalesce((options ->> 'notify')::boolean, false),
    {schema}.job_now(),
    {schema}.job_now()
  )
  ON CONFLICT DO NOTHING
  RETURNING created_on INTO made;

  IF made IS NULL OR NOT partitioned THEN
    RETURN;
  END IF;

  {partition_statements}
END
$body$;

-- Remove a queue with its jobs: a partitioned queue's table is dropped, a shared table's rows deleted.
-- Schedules and subscriptions go with the queue row. An unknown queue fails on the NULL table name.
CREATE FUNCTION {schema}.delete_queue(queue_name text) RETURNS void
LANGUAGE plpgsql
AS $body$
DECLARE
  tbl text;
  partitioned boolean;
BEGIN
  SELECT q.table_name, q.partition INTO tbl, partitioned FROM {schema}.queue q WHERE q.name = queue_name;
  IF partitioned THEN
    EXECUTE format('DROP TABLE IF EXISTS {schema_in_literal}.%I', tbl);
  ELSE
    EXECUTE format('DELETE FROM {schema_in_literal}.%I WHERE name = %L', tbl, queue_name);
  END IF;
  DELETE FROM {schema}.queue WHERE name = queue_name;
END
$body$;
