-- Retention, history and facts. Notifications past their service's retention (in the service's
-- time zone) move to notification_history, which keeps what billing and statistics need and
-- nothing that names a person: no recipient (hash or ciphertext), no personalisation. Each batch
-- moves in one statement (src/messaging/retention/), so a query reading both tables in one
-- snapshot sees every notification exactly once. Test-key notifications are deleted, not kept.

-- Days a service keeps its notifications of a type; absent: 7.
CREATE TABLE service_data_retention (
  service_id         uuid NOT NULL REFERENCES services,
  notification_type  text NOT NULL DEFAULT 'sms',
  days_of_retention  int NOT NULL CHECK (days_of_retention BETWEEN 3 AND 90),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service_id, notification_type)
);

CREATE TABLE notification_history (
  id                 uuid PRIMARY KEY,
  service_id         uuid NOT NULL,
  template_id        uuid NOT NULL,
  template_version   int NOT NULL,
  notification_type  text NOT NULL,
  api_key_id         uuid,
  key_type           text NOT NULL,
  job_id             uuid,
  job_row            int,
  reference          text,
  international      boolean NOT NULL,
  status             text NOT NULL,
  billable_units     int,
  rate_multiplier    numeric,
  provider           text,
  created_at         timestamptz NOT NULL,
  sent_at            timestamptz,
  completed_at       timestamptz,
  updated_at         timestamptz
);
CREATE INDEX notification_history_service ON notification_history (service_id, created_at, id);
CREATE INDEX notification_history_job ON notification_history (job_id, job_row) WHERE job_id IS NOT NULL;

-- Billing and statistics read every notification ever sent through this view. UNION ALL: the two
-- tables never hold the same notification in one snapshot, so UNION's implicit DISTINCT would only
-- cost a sort of every row (GOV.UK Notify measured 759 ms for one busy service-day with it).
CREATE VIEW notifications_all_time_view AS
  SELECT id, service_id, template_id, template_version, notification_type, api_key_id, key_type, job_id, job_row, reference,
         international, status, billable_units, rate_multiplier, provider, created_at, sent_at, completed_at, updated_at
  FROM notifications
  UNION ALL
  SELECT id, service_id, template_id, template_version, notification_type, api_key_id, key_type, job_id, job_row, reference,
         international, status, billable_units, rate_multiplier, provider, created_at, sent_at, completed_at, updated_at
  FROM notification_history;

-- The price of one billable unit (one SMS fragment at rate multiplier 1) from a date on; a day is
-- billed at the rate valid on it.
CREATE TABLE sms_rates (
  valid_from  date PRIMARY KEY,
  rate        numeric NOT NULL CHECK (rate >= 0)
);
-- A starting price (US dollars, about a US carrier segment's); an agency inserts its own contract's rates.
INSERT INTO sms_rates (valid_from, rate) VALUES ('2020-01-01', 0.0079);

-- Facts: computed from the view for a range of local days and replaced whole per service-day, so a
-- rerun gives the same rows and a status that changed after the last run is counted where it is now.
CREATE TABLE ft_billing (
  local_date          date NOT NULL,            -- in the service's time zone
  service_id          uuid NOT NULL,
  template_id         uuid NOT NULL,
  notification_type   text NOT NULL,
  provider            text NOT NULL,
  rate_multiplier     numeric NOT NULL,
  international       boolean NOT NULL,
  rate                numeric NOT NULL,
  billable_units      bigint NOT NULL,
  notifications_sent  bigint NOT NULL,
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (local_date, service_id, template_id, notification_type, provider, rate_multiplier, international)
);
CREATE INDEX ft_billing_service ON ft_billing (service_id, local_date);

CREATE TABLE ft_notification_status (
  local_date          date NOT NULL,
  service_id          uuid NOT NULL,
  template_id         uuid NOT NULL,
  job_id              uuid,
  notification_type   text NOT NULL,
  key_type            text NOT NULL,
  status              text NOT NULL,
  notification_count  bigint NOT NULL,
  updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ft_notification_status_key ON ft_notification_status
  (local_date, service_id, template_id, job_id, notification_type, key_type, status) NULLS NOT DISTINCT;
CREATE INDEX ft_notification_status_service ON ft_notification_status (service_id, local_date);

-- Nightly tasks run once a night whichever process gets there first: the row is the claim.
CREATE TABLE nightly_runs (
  task         text NOT NULL,
  night        date NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz,
  summary      jsonb,
  PRIMARY KEY (task, night)
);

-- A job's file is deleted from the object store once its notifications are past retention.
ALTER TABLE jobs ADD COLUMN archived_at timestamptz;
