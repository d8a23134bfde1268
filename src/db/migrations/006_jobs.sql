-- Bulk jobs: a CSV of recipients (a "phone number" column and one per placeholder) for one template.
-- The file lives in the object store (HERALD_JOB_STORE), never in the database; its rows were
-- validated when it was uploaded. The jobs engine turns its rows into notifications in batches,
-- each batch's notifications and the job's progress (rows_done) in one transaction, so a restart
-- resumes where the last batch ended and creates no row twice.
CREATE TABLE jobs (
  id               uuid PRIMARY KEY,
  service_id       uuid NOT NULL REFERENCES services,
  template_id      uuid NOT NULL,
  template_version int NOT NULL,
  api_key_id       uuid,                       -- the key that uploaded it; none from the CLI
  key_type         text NOT NULL DEFAULT 'normal',
  file_uri         text,                       -- NULL once retention has removed the file
  original_name    text NOT NULL,
  rows             int NOT NULL,
  rows_done        int NOT NULL DEFAULT 0,     -- data rows turned into notifications so far
  status           text NOT NULL CHECK (status IN ('scheduled', 'pending', 'in progress', 'finished', 'cancelled', 'error')),
  scheduled_for    timestamptz,
  error            text,
  claimed_until    timestamptz,
  created_by       text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  finished_at      timestamptz
);
CREATE INDEX jobs_due ON jobs (coalesce(scheduled_for, created_at)) WHERE status IN ('scheduled', 'pending', 'in progress');
CREATE INDEX jobs_service ON jobs (service_id, created_at DESC);
