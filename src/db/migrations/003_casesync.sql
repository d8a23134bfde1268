-- Case sync: index cases ⇄ CommCare. Outbound, each case_sync_queue row is one job (its primary key
-- keeps it to one per case): claimed with a lease, posted, and removed once the generation it
-- posted is still the row's. Inbound, each county's domain is polled from a stored cursor.

-- The job's retry state. A job out of attempts (or refused for good) keeps its row, with failed_at
-- set: the case stays visibly failed (`herald cases --failed`) until `herald cases retry`.
ALTER TABLE case_sync_queue
  ADD COLUMN attempts       int NOT NULL DEFAULT 0,   -- attempts spent; a 429 spends none
  ADD COLUMN retry_at       timestamptz,              -- not before (backoff, or a 429's Retry-After)
  ADD COLUMN claimed_by     text,
  ADD COLUMN claimed_until  timestamptz,              -- the lease: another worker may take the job after it
  ADD COLUMN last_error     text,
  ADD COLUMN failed_at      timestamptz;
CREATE INDEX case_sync_queue_due ON case_sync_queue (requested_at) WHERE failed_at IS NULL;

-- What CommCare holds of a case, as last seen: when Herald last posted it, and the
-- server_date_modified of the last version pulled back (a pull of that version again is a no-op).
ALTER TABLE index_cases
  ADD COLUMN synced_at             timestamptz,
  ADD COLUMN commcare_modified_at  timestamptz;

-- What case sync did to each case and why: posts, transfers followed, failures, changes pulled.
CREATE TABLE case_sync_events (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  index_case_id  bigint NOT NULL,            -- index_cases (id)
  kind           text NOT NULL CHECK (kind IN (
    'posted', 'redirected', 'cycle', 'retrying', 'rate_limited', 'failed', 'retry_requested',
    'pulled_update', 'pulled_new_case', 'pulled_new_person')),
  detail         jsonb,                      -- domains, case ids, status codes, errors; never names or numbers
  at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_sync_events_case ON case_sync_events (index_case_id);

-- Inbound: per domain, the server_date_modified up to which changes have been pulled. The next
-- poll starts a little before it (cases modified in the same instant may arrive late); versions
-- already seen are skipped by index_cases.commcare_modified_at. A lease lets one worker poll a domain.
CREATE TABLE commcare_cursors (
  domain         text PRIMARY KEY,
  modified_upto  timestamptz,
  polled_at      timestamptz,
  claimed_until  timestamptz
);

-- Cases pulled from CommCare keep CommCare's case_id, which need not be a uuid; lab results pulled
-- with them, or carried to a transferred case, come from no lab row of ours.
ALTER TABLE index_cases ALTER COLUMN case_id TYPE text;
ALTER TABLE lab_results ALTER COLUMN lab_row_id DROP NOT NULL;
