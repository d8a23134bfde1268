-- Exposure notification: one verification code per person per infection episode.
--
-- exposure_queue (link's marks) is the inbox. Intake turns each mark into a notice, or joins it to
-- the person's notice for the same episode, or drops it with a reason. A notice then moves through
--   pending → phone_checked → issued
-- or ends not_sent with a reason (no_phone, invalid, landline, voip, lookup_refused, refused,
-- out_of_attempts). Retries wait in retry_at; a claim is a lease (claimed_until).
CREATE TABLE exposure_notices (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  person_id      bigint NOT NULL,            -- people (id)
  episode_start  date NOT NULL,              -- the first positive test date of the episode
  lab_result_id  bigint NOT NULL,            -- the result that opened the episode
  state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'phone_checked', 'issued', 'not_sent')),
  reason         text,                       -- why not sent; or what the last failed attempt met
  test_type      text NOT NULL,              -- confirmed | likely
  test_date      date,
  symptom_date   date,
  phone_e164     text,                       -- set by the phone check: what the code is sent to
  uuid           uuid,                       -- the verification server's idempotency key: a keyed hash of phone and episode
  attempts       int NOT NULL DEFAULT 0,
  retry_at       timestamptz,
  claimed_until  timestamptz,
  expires_at     timestamptz,                -- the code's expiry, as the server answered (the code itself is not kept)
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (person_id, episode_start)
);
CREATE INDEX exposure_notices_due ON exposure_notices (state, retry_at) WHERE state IN ('pending', 'phone_checked');

-- What exposure did and why, per notice (and per mark it dropped or joined): append only.
CREATE TABLE exposure_events (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  notice_id      bigint,                     -- exposure_notices (id); none for a mark dropped at intake
  lab_result_id  bigint,
  kind           text NOT NULL,              -- opened, joined, ineligible, phone_checked, not_sent, issued, retrying, retry_requested
  detail         jsonb,                      -- reasons, error codes, line types; never a phone number
  at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exposure_events_notice ON exposure_events (notice_id);

-- Lookup answers per number, by keyed hash (HERALD_SECRET_KEY): the plaintext number is not kept here.
CREATE TABLE phone_lookups (
  phone_hash  bytea PRIMARY KEY,
  valid       boolean NOT NULL,
  line_type   text,
  checked_at  timestamptz NOT NULL DEFAULT now()
);

-- The verification server's quota as last reported (X-RateLimit-*), shared by every worker: a
-- worker takes codes from `remaining` before it sends, and waits for `reset_at` when none are left.
CREATE TABLE rate_limits (
  name       text PRIMARY KEY,
  remaining  int,
  reset_at   timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE rate_limits ADD COLUMN quota int; -- X-RateLimit-Limit: what a new window holds
