-- Billing and status facts read one service-day of notifications at a time. Their indexes by
-- service and time now carry every column those queries read, so PostgreSQL answers them from the
-- index alone (an index-only scan) instead of visiting a heap page per few rows: a busy service-day
-- is ~220,000 rows. The same index still serves the API's listing (newest first, scanned backwards),
-- retention's batches and reports' pages by (created_at, id).
DROP INDEX notifications_service;
CREATE INDEX notifications_service ON notifications (service_id, created_at, id)
  INCLUDE (key_type, status, template_id, notification_type, provider, rate_multiplier, international, billable_units, job_id);

DROP INDEX notification_history_service;
CREATE INDEX notification_history_service ON notification_history (service_id, created_at, id)
  INCLUDE (key_type, status, template_id, notification_type, provider, rate_multiplier, international, billable_units, job_id);
