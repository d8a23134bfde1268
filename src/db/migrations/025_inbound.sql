-- Texts that residents send back (issue 18): each service's inbound numbers, the texts received,
-- and the opt-outs (STOP) they record. src/messaging/inbound/ owns these tables.

-- A service's own numbers that residents can text (its provider numbers, E.164). Not personal data:
-- kept as they are. A number belongs to one service, so an inbound text finds its service by its To.
CREATE TABLE inbound_numbers (
  number      text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
  service_id  uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_numbers_service ON inbound_numbers (service_id);

-- A text received, as GOV.UK Notify's inbound_sms: the sender's number and the content sealed
-- (messaging:encrypt) as a recipient's are, the number also keyed-hashed (messaging:search) to find a
-- resident's texts and opt-outs. Deleted past the service's sms retention (retention.ts).
CREATE TABLE received_texts (
  id                uuid PRIMARY KEY,
  service_id        uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  notify_number     text NOT NULL,            -- the service's inbound number it was sent to
  user_number_hash  bytea NOT NULL,
  user_number_ct    bytea NOT NULL,
  content_ct        bytea NOT NULL,
  provider          text NOT NULL,            -- twilio, vonage
  provider_ref      text,                     -- Twilio's MessageSid, Vonage's messageId
  provider_date     timestamptz NOT NULL,     -- when the provider says it came (Notify's date_received)
  created_at        timestamptz NOT NULL DEFAULT now()
);
-- Providers post a webhook again when they get no 2xx: the same text is stored (and forwarded) once.
CREATE UNIQUE INDEX received_texts_provider_ref ON received_texts (provider, provider_ref);
-- GET /v2/received-text-messages: a service's texts, newest first, paged by (created_at, id).
CREATE INDEX received_texts_service ON received_texts (service_id, created_at DESC, id DESC);

-- Residents who replied STOP (or STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) to a service's number,
-- until they reply START or UNSTOP (the row is deleted). Texts to the number are refused while it is
-- here. Kept beyond retention: the opt-out must outlive the text that made it. The number is sealed
-- too, to show to the service's managers in the console.
CREATE TABLE sms_opt_outs (
  service_id        uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  number_hash       bytea NOT NULL,
  number_ct         bytea NOT NULL,
  keyword           text NOT NULL,            -- the word it was made with, upper case
  received_text_id  uuid,                     -- the text that made it (gone after retention: no foreign key)
  opted_out_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service_id, number_hash)
);
-- Exposure notification honours an opt-out from any service: found by the number's hash alone.
CREATE INDEX sms_opt_outs_number ON sms_opt_outs (number_hash);
CREATE INDEX sms_opt_outs_when ON sms_opt_outs (service_id, opted_out_at DESC);
