-- One admission rule for every way a text is created (API, bulk job, CLI): the daily limit and the
-- rate limit hold for all of them (src/messaging/api/admit.ts).
--
-- A bulk job is checked against the daily limit at upload and again when it starts, as GOV.UK
-- Notify's process_job does: one that would pass the limit then does not start, and ends as Notify's
-- status 'sending limits exceeded'. A job that starts counts all its rows at once on that day
-- (counted_on, in the service's time zone), so texts sent meanwhile cannot take the room it was
-- given; the rows it did not make (cancelled, skipped) are given back when it ends.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
  CHECK (status IN ('scheduled', 'pending', 'in progress', 'finished', 'cancelled', 'error', 'sending limits exceeded'));
ALTER TABLE jobs ADD COLUMN counted_on date;

-- A text sent later (POST /v2/notifications/sms with scheduled_for, at most 24 hours ahead): a send
-- queue row with a time, not due (retry_at) before it.
ALTER TABLE notifications ADD COLUMN scheduled_for timestamptz;
