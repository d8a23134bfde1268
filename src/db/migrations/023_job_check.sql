-- A bulk job uploaded in the console is checked before anything is sent, as GOV.UK Notify's check
-- page does: the upload is recorded as 'uploaded' with every row's problem (row number and Notify's
-- message: never a value from the file), and its file stored sealed only when it has none. Nothing
-- claims an uploaded job (the jobs queue takes scheduled, pending and in progress ones); starting it
-- (now, or scheduled) makes it 'pending' or 'scheduled', as an upload through the API is at once.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
  CHECK (status IN ('uploaded', 'scheduled', 'pending', 'in progress', 'finished', 'cancelled', 'error', 'sending limits exceeded'));
ALTER TABLE jobs ADD COLUMN problems jsonb NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN bad_rows int NOT NULL DEFAULT 0;

-- The console's activity page finds a service's texts to a number by its keyed hash (never a
-- plaintext index): this index answers that without reading the service's other texts.
CREATE INDEX notifications_recipient ON notifications (service_id, recipient_hash);
