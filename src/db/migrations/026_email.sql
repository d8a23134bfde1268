-- Email (issue 18): email templates (a subject beside the body), emails as notifications, a
-- service's reply-to addresses, and complaints. An email's address is kept as a phone number is:
-- recipient_hash (keyed HMAC, to find it) and recipient_ct (sealed, to send and report it), with
-- notification_type 'email'; facts, retention and reports read them as they read texts.

ALTER TABLE templates DROP CONSTRAINT templates_type_check;
ALTER TABLE templates ADD CONSTRAINT templates_type_check CHECK (type IN ('sms', 'email'));
ALTER TABLE templates ADD COLUMN subject text;
ALTER TABLE templates ADD CONSTRAINT templates_email_subject CHECK (type <> 'email' OR subject IS NOT NULL);
ALTER TABLE template_versions ADD COLUMN subject text;

-- The Reply-To of a service's emails, as GOV.UK Notify's service_email_reply_to: the default one
-- unless a request names another (email_reply_to_id). A service's own address: not personal data.
CREATE TABLE service_email_reply_to (
  id             uuid PRIMARY KEY,
  service_id     uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  email_address  text NOT NULL,
  is_default     boolean NOT NULL DEFAULT false,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX service_email_reply_to_default ON service_email_reply_to (service_id) WHERE is_default;

-- An email's Reply-To as sent, and its one-click unsubscribe URL (RFC 8058), sealed: such a URL
-- usually carries a token naming the person.
ALTER TABLE notifications ADD COLUMN reply_to text, ADD COLUMN unsubscribe_ct bytea;

-- Complaints (a person marked an email as spam), as SES reports them: the notification keeps its
-- status (GOV.UK Notify's rule); the complaint is kept beside it, found by provider and reference.
CREATE TABLE email_complaints (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  provider        text NOT NULL,
  provider_ref    text NOT NULL,
  complaint_type  text,                        -- SES's complaintFeedbackType (abuse, fraud, …), when given
  feedback_id     text,
  received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_complaints_ref ON email_complaints (provider, provider_ref);
