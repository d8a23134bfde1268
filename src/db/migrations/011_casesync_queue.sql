-- Case sync on the work queue (src/engine/queue.ts): a 429's wait is the primitive's `postponed`
-- event. Earlier `rate_limited` events stay as they were written.
ALTER TABLE case_sync_events DROP CONSTRAINT case_sync_events_kind_check;
ALTER TABLE case_sync_events ADD CONSTRAINT case_sync_events_kind_check CHECK (kind IN (
  'posted', 'redirected', 'cycle', 'retrying', 'postponed', 'rate_limited', 'failed', 'retry_requested',
  'pulled_update', 'pulled_new_case', 'pulled_new_person'));


-- Inbound cursors need nothing: retry_at (the next poll) starts NULL, due now, so each domain is
-- polled once right after the upgrade, which the overlap makes harmless.
