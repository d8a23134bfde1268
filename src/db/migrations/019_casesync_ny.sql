-- Case sync as New York's project spaces see it (issue 16).

-- Where a case's later results go: the local case at the end of its transfer or duplicate chain,
-- set when case sync adopts or redirects to it. Link follows it, so the origin takes no new result
-- and one result is never posted twice (once on the origin, once on the case it moved to).
ALTER TABLE index_cases ADD COLUMN moved_to bigint REFERENCES index_cases (id);

-- An operator's answer to an unresolved transfer (`herald cases resolve CASE --to CASE_ID`): the
-- CommCare case (and its domain) this case's changes go to. Case sync starts its chain there.
ALTER TABLE index_cases
  ADD COLUMN resolved_to_case_id text,
  ADD COLUMN resolved_to_domain  text;

-- A transfer's destination found among Herald's own cases (step two of the resolution order).
CREATE INDEX index_cases_transfer_source ON index_cases ((data->>'transfer_source_case_id'))
  WHERE data ? 'transfer_source_case_id';

-- Any external id CommCare holds (New York's are numeric MPI ids, not uuids) is kept as the
-- person's key: six cases of one person with one external id are one person.
CREATE TABLE person_external_ids (
  external_id  text PRIMARY KEY,
  person_id    bigint NOT NULL REFERENCES people (id),
  added_at     timestamptz NOT NULL DEFAULT now()
);

-- Pulled cases Herald did not import, one row per CommCare case, with the rule that skipped it
-- (docs/architecture.md): the latest version seen. Values of the case are not kept.
CREATE TABLE commcare_skipped_cases (
  case_id      text PRIMARY KEY,
  domain       text NOT NULL,
  reason       text NOT NULL,
  modified_at  timestamptz NOT NULL,          -- CommCare's server_date_modified of the version skipped
  at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commcare_skipped_cases_reason ON commcare_skipped_cases (domain, reason);

ALTER TABLE case_sync_events DROP CONSTRAINT case_sync_events_kind_check;
ALTER TABLE case_sync_events ADD CONSTRAINT case_sync_events_kind_check CHECK (kind IN (
  'posted', 'redirected', 'cycle', 'retrying', 'postponed', 'rate_limited', 'failed', 'retry_requested',
  'pulled_update', 'pulled_new_case', 'pulled_new_person',
  'unresolved_transfer', 'transfer_resolved', 'missing_in_commcare', 'recreated'));
