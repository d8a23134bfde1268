-- Messaging: a GOV.UK Notify-compatible API for agency staff and other systems.
--
-- Services own API keys, SMS templates (every version kept) and the people a team key may text.
-- A notification moves created → sending → delivered | temporary-failure | permanent-failure
-- (or technical-failure, validation-failed, cancelled). No table holds a plaintext phone number or
-- personalisation: each is an HMAC (finding equal values) and an AES-256-GCM ciphertext (reading it
-- back to send it or report it), both keyed from HERALD_SECRET_KEY (src/privacy/).

CREATE TABLE services (
  id             uuid PRIMARY KEY,
  name           text NOT NULL UNIQUE,
  sms_sender     text NOT NULL,                   -- the From of its texts: a number or a sender id
  international  boolean NOT NULL DEFAULT false,  -- may text numbers outside the default region
  restricted     boolean NOT NULL DEFAULT false,  -- trial mode: live keys too text members and the guest list only
  rate_limit     int NOT NULL DEFAULT 3000,       -- requests a minute, per key type
  message_limit  int NOT NULL DEFAULT 250000,     -- texts a day (live and team keys), days in `timezone`
  timezone       text NOT NULL DEFAULT 'America/New_York',
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- The secret of a key is derived from HERALD_SECRET_KEY and the key's id (src/messaging/keys.ts):
-- shown once at creation, never stored. secret_hash tells whether a derived secret is still the
-- one handed out (it is not once HERALD_SECRET_KEY changes).
CREATE TABLE api_keys (
  id           uuid PRIMARY KEY,
  service_id   uuid NOT NULL REFERENCES services,
  name         text NOT NULL,
  key_type     text NOT NULL CHECK (key_type IN ('normal', 'team', 'test')),
  secret_hash  bytea NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);
CREATE UNIQUE INDEX api_keys_name ON api_keys (service_id, name) WHERE revoked_at IS NULL;

-- A template and its current version; template_versions keeps every version, as sent.
CREATE TABLE templates (
  id          uuid PRIMARY KEY,
  service_id  uuid NOT NULL REFERENCES services,
  name        text NOT NULL,
  type        text NOT NULL DEFAULT 'sms' CHECK (type = 'sms'),
  body        text NOT NULL,
  version     int NOT NULL DEFAULT 1,
  archived    boolean NOT NULL DEFAULT false,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz
);
CREATE INDEX templates_service ON templates (service_id);

CREATE TABLE template_versions (
  template_id  uuid NOT NULL REFERENCES templates,
  version      int NOT NULL,
  name         text NOT NULL,
  body         text NOT NULL,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (template_id, version)
);

-- Whom a team key (and a restricted service's live key) may text: team members and the guest list.
CREATE TABLE service_recipients (
  service_id  uuid NOT NULL REFERENCES services,
  phone_hash  bytea NOT NULL,
  phone_ct    bytea NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('member', 'guest')),
  name_ct     bytea,                      -- their name, sealed like the number
  added_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service_id, phone_hash)
);

CREATE TABLE notifications (
  id                  uuid PRIMARY KEY,
  service_id          uuid NOT NULL,          -- services (id)
  template_id         uuid NOT NULL,
  template_version    int NOT NULL,
  notification_type   text NOT NULL DEFAULT 'sms',
  api_key_id          uuid,                   -- none for a bulk job's rows
  key_type            text NOT NULL,          -- normal | team | test
  job_id              uuid,
  job_row             int,                    -- the CSV row number, as a spreadsheet shows it (the header is row 1)
  reference           text,                   -- the client's own reference
  recipient_hash      bytea NOT NULL,
  recipient_ct        bytea,                  -- NULL once retention has removed it
  personalisation_ct  bytea,
  international       boolean NOT NULL DEFAULT false,
  status              text NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'sending', 'sent', 'delivered', 'pending',
                        'temporary-failure', 'permanent-failure', 'technical-failure', 'validation-failed', 'cancelled')),
  billable_units      int,                    -- SMS fragments, known once rendered for sending
  rate_multiplier     numeric,
  provider            text,                   -- which provider it was handed to
  provider_ref        text,                   -- that provider's id for it (receipts name it)
  attempts            int NOT NULL DEFAULT 0,
  retry_at            timestamptz,
  claimed_until       timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  sent_at             timestamptz,
  completed_at        timestamptz,
  updated_at          timestamptz
);
CREATE INDEX notifications_to_send ON notifications (created_at) WHERE status = 'created';
CREATE INDEX notifications_in_flight ON notifications (sent_at) WHERE status IN ('sending', 'pending');
CREATE INDEX notifications_service ON notifications (service_id, created_at DESC, id DESC);
CREATE INDEX notifications_reference ON notifications (service_id, reference) WHERE reference IS NOT NULL;
CREATE UNIQUE INDEX notifications_provider_ref ON notifications (provider, provider_ref) WHERE provider_ref IS NOT NULL;
CREATE INDEX notifications_job ON notifications (job_id, job_row) WHERE job_id IS NOT NULL;

-- Rate limits shared by every API process: a token bucket per service and key type, and texts per
-- service per day. Row locks make them exact across processes; no other server is needed.
CREATE TABLE rate_buckets (
  service_id   uuid NOT NULL,
  key_type     text NOT NULL,
  tokens       double precision NOT NULL,
  refilled_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service_id, key_type)
);
CREATE TABLE daily_counts (
  service_id  uuid NOT NULL,
  day         date NOT NULL,
  texts       int NOT NULL DEFAULT 0,
  PRIMARY KEY (service_id, day)
);

-- SMS providers, as configured; their errors push them down the order for a while (penalty, which
-- fades with time), so texts fail over to the next and drift back when it recovers.
CREATE TABLE sms_providers (
  name          text PRIMARY KEY,
  priority      int NOT NULL,                 -- lower goes first
  penalty       double precision NOT NULL DEFAULT 0,
  penalised_at  timestamptz,
  sent          bigint NOT NULL DEFAULT 0,
  failed        bigint NOT NULL DEFAULT 0
);

-- Delivery receipts as the providers posted them. Each names the notification itself (Twilio: in
-- the StatusCallback URL Herald gave; Vonage: client-ref), so a receipt that outruns the recording
-- of the send still finds it. Applied in batches by the receipts engine; a receipt whose
-- notification is not there is tried again, then kept as unknown (logged and counted).
CREATE TABLE sms_receipts (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  notification_id  uuid,
  provider         text NOT NULL,
  provider_ref     text,
  status           text NOT NULL,             -- mapped: sent, pending, delivered, temporary-failure, permanent-failure
  detail           jsonb,                     -- the provider's own status and error code
  received_at      timestamptz NOT NULL DEFAULT now(),
  attempts         int NOT NULL DEFAULT 0,
  retry_at         timestamptz,
  unknown_at       timestamptz                -- given up: no such notification
);
CREATE INDEX sms_receipts_due ON sms_receipts (id) WHERE unknown_at IS NULL;
