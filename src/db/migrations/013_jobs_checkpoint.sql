-- Bulk jobs resume from the data rows they consumed, not from the notifications they made: a row
-- skipped (a bad phone number) made none, so counting notifications made a restart create the row
-- after it twice. rows_done stays what it says (notifications created, shown as progress).
ALTER TABLE jobs ADD COLUMN rows_read int NOT NULL DEFAULT 0;
-- The old engine resumed after rows_done data rows: a job in progress resumes where it would have.
UPDATE jobs SET rows_read = rows_done;

-- A scheduled job is a queue row with a time: due (retry_at) at its scheduled time.
UPDATE jobs SET retry_at = scheduled_for WHERE status = 'scheduled' AND retry_at IS NULL;
