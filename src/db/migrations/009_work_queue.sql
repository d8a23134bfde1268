-- One work queue for every engine (src/engine/queue.ts). Every table an engine claims from has the
-- same six columns, read and written only through the primitive:
--   claimed_by     the worker holding the row (HERALD_WORKER_ID), or NULL
--   claimed_until  its lease: after it, another worker may claim the row
--   attempts       attempts spent (a postponement, e.g. a 429, spends none)
--   retry_at       not before (backoff, a Retry-After, or a schedule's next time)
--   last_error     the last failure's error (never personal data)
--   failed_at      terminal: out of attempts or refused for good; waits for `herald queue retry`
-- The engines' own state columns (status, state, …) stay: the primitive only claims and fails.

ALTER TABLE inbox_files RENAME COLUMN lease_until TO claimed_until;
ALTER TABLE inbox_files RENAME COLUMN error TO last_error;
ALTER TABLE inbox_files ADD COLUMN retry_at timestamptz, ADD COLUMN failed_at timestamptz;
-- inbox_files used lease_until of a pending file as its backoff.
UPDATE inbox_files SET retry_at = claimed_until, claimed_until = NULL WHERE state = 'pending' AND claimed_until IS NOT NULL;
UPDATE inbox_files SET failed_at = now() WHERE state = 'failed';

ALTER TABLE link_queue RENAME COLUMN error TO last_error;
ALTER TABLE link_queue ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz, ADD COLUMN failed_at timestamptz;
UPDATE link_queue SET failed_at = now() WHERE attempts >= 5;

-- case_sync_queue has the six columns since 003.

ALTER TABLE commcare_cursors ADD COLUMN claimed_by text, ADD COLUMN attempts int NOT NULL DEFAULT 0,
  ADD COLUMN retry_at timestamptz, ADD COLUMN last_error text, ADD COLUMN failed_at timestamptz;

ALTER TABLE exposure_queue ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz, ADD COLUMN attempts int NOT NULL DEFAULT 0,
  ADD COLUMN retry_at timestamptz, ADD COLUMN last_error text, ADD COLUMN failed_at timestamptz;

ALTER TABLE exposure_notices ADD COLUMN claimed_by text, ADD COLUMN last_error text, ADD COLUMN failed_at timestamptz;
-- `reason` said what the last failed try met on a notice still on its way; that is last_error now.
UPDATE exposure_notices SET last_error = reason, reason = NULL WHERE state IN ('pending', 'phone_checked') AND reason IS NOT NULL;
UPDATE exposure_notices SET failed_at = updated_at WHERE state = 'not_sent' AND reason = 'out_of_attempts';

ALTER TABLE notifications ADD COLUMN claimed_by text, ADD COLUMN last_error text, ADD COLUMN failed_at timestamptz;

ALTER TABLE sms_receipts RENAME COLUMN unknown_at TO failed_at;
ALTER TABLE sms_receipts ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz, ADD COLUMN last_error text;

ALTER TABLE jobs ADD COLUMN claimed_by text, ADD COLUMN attempts int NOT NULL DEFAULT 0,
  ADD COLUMN retry_at timestamptz, ADD COLUMN last_error text, ADD COLUMN failed_at timestamptz;
UPDATE jobs SET failed_at = coalesce(finished_at, now()), last_error = error WHERE status = 'error';

-- A schedule is a queue row with a time: retry_at is when it is next due. The nightly run claims its
-- row when due, runs, and moves retry_at to the next night (nightly_runs keeps each night's summary).
CREATE TABLE schedules (
  name           text PRIMARY KEY,
  claimed_by     text,
  claimed_until  timestamptz,
  attempts       int NOT NULL DEFAULT 0,
  retry_at       timestamptz,
  last_error     text,
  failed_at      timestamptz,
  last_run_at    timestamptz
);

-- What the primitive did to a row (retrying, failed, retry_requested, released), for engines whose
-- own event table does not take these: in the same transaction as the change it records.
CREATE TABLE queue_events (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  engine  text NOT NULL,
  item    text NOT NULL,
  kind    text NOT NULL,
  detail  jsonb,
  at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_events_item ON queue_events (engine, item);

-- When a row became work, for `herald queue`'s oldest waiting age.
ALTER TABLE link_queue ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();

-- `herald queue` counts failed rows of every queue: a small index each (failures are few).
CREATE INDEX inbox_files_failed ON inbox_files (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX link_queue_failed ON link_queue (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX exposure_queue_failed ON exposure_queue (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX exposure_notices_failed ON exposure_notices (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX notifications_failed ON notifications (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX sms_receipts_failed ON sms_receipts (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX jobs_failed ON jobs (failed_at) WHERE failed_at IS NOT NULL;
