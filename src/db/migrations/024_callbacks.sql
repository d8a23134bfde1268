-- Messaging that talks back (issue 18): a service's callbacks, and why a text failed.

-- A service's callback URLs, as GOV.UK Notify's service callback API: one for delivery statuses,
-- one for received texts. The bearer token is sealed (messaging:encrypt): Herald sends it, never shows it.
CREATE TABLE service_callbacks (
  service_id    uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  kind          text NOT NULL CHECK (kind IN ('delivery_status', 'inbound_sms')),
  url           text NOT NULL,
  token_ct      bytea NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service_id, kind)
);

-- Callbacks to send, one row each, on the work queue (src/engine/queue.ts, engine `callbacks`).
-- The body is built when it is sent, from the notification (or received text) it names: the phone
-- number is decrypted for the call and never stored here. `status` is the status the callback
-- reports (a later one is a later row).
CREATE TABLE callback_queue (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  service_id     uuid NOT NULL,
  kind           text NOT NULL CHECK (kind IN ('delivery_status', 'inbound_sms')),
  subject_id     uuid NOT NULL,                 -- notifications (id) or received texts (id)
  status         text,                          -- delivery_status: the status reported
  created_at     timestamptz NOT NULL DEFAULT now(),
  sent_at        timestamptz,                   -- the service's server answered 2xx
  attempts       int NOT NULL DEFAULT 0,
  retry_at       timestamptz,
  claimed_by     text,
  claimed_until  timestamptz,
  last_error     text,
  failed_at      timestamptz
);
CREATE INDEX callback_queue_due ON callback_queue (id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX callback_queue_service ON callback_queue (service_id, created_at);

-- Why a text failed, in words a person can act on (invalid number, landline, carrier blocked,
-- opted out, unreachable), and the provider's own code it came from.
ALTER TABLE notifications ADD COLUMN failure_reason text, ADD COLUMN failure_code text;
ALTER TABLE notification_history ADD COLUMN failure_reason text, ADD COLUMN failure_code text;
