-- Ingest: export files found in the inbox, their content, their rows, and the rows' identities.

-- Every object found in an inbox (or named to `herald ingest`). One row per (uri, size, mtime):
-- a file rewritten in place is found again. Claimed by one worker at a time through a lease.
CREATE TABLE inbox_files (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  uri          text NOT NULL,              -- /abs/path or s3://bucket/key
  size         bigint NOT NULL,
  modified_at  timestamptz NOT NULL,
  found_at     timestamptz NOT NULL DEFAULT now(),
  state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
  claimed_by   text,
  lease_until  timestamptz,
  attempts     int NOT NULL DEFAULT 0,
  file_id      bigint,                     -- the content it turned out to hold
  outcome      text CHECK (outcome IN ('ingested', 'already_ingested', 'rejected')),
  error        text,
  UNIQUE (uri, size, modified_at)
);
CREATE INDEX inbox_files_todo ON inbox_files (id) WHERE state IN ('pending', 'claimed');

-- A file's content, identified by its SHA-256: the same bytes under another name are not ingested twice.
CREATE TABLE files (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sha256          bytea NOT NULL UNIQUE,
  name            text NOT NULL,           -- the uri it was first found under
  size            bigint NOT NULL,
  version         smallint CHECK (version IN (1, 2, 3)),
  status          text NOT NULL DEFAULT 'ingesting' CHECK (status IN ('ingesting', 'ingested', 'rejected')),
  error           text,                    -- why the whole file was rejected
  total_rows      int NOT NULL DEFAULT 0,  -- data rows (records after the header) accounted for so far
  new_rows        int NOT NULL DEFAULT 0,
  seen_rows       int NOT NULL DEFAULT 0,
  duplicate_rows  int NOT NULL DEFAULT 0,
  error_rows      int NOT NULL DEFAULT 0,
  by_county       jsonb NOT NULL DEFAULT '{}', -- {"<fips>": {"new": n, "seen": n, "duplicate": n, "error": n}}
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  CHECK (total_rows = new_rows + seen_rows + duplicate_rows + error_rows)
);
ALTER TABLE inbox_files ADD FOREIGN KEY (file_id) REFERENCES files (id);

-- Each distinct row, stored once, with its fields typed. Insert-only: the link engine reads it.
-- Also a row counted as seen because it matched an earlier row in that row's (lower) version, when
-- it holds values in columns that version lacks (seen_before): its new information must reach link.
CREATE TABLE lab_rows (
  id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  checksum           bytea NOT NULL,         -- SHA-256 of the row in its own version's form (unique: see lab_row_keys)
  version            smallint NOT NULL,
  file_id            bigint NOT NULL REFERENCES files (id),
  line               int NOT NULL,           -- line of the file where the row starts (header = 1)
  raw                text NOT NULL,          -- the row in checksum form, every column (checksum = sha256(raw) for UTF-8 rows)
  seen_before        boolean NOT NULL DEFAULT false, -- counted as seen; kept for the columns it adds
  patient_key        text,
  last_name          text,
  first_name         text,
  middle_name        text,
  date_of_birth      date,
  sex                text,
  address1           text,
  address2           text,
  city               text,
  zip                text,
  county_fips        int,
  phone              text,
  lab_name           text,
  lab_clia           text,
  facility_name      text,
  provider_first     text,
  provider_last      text,
  accession_number   text,
  collected_at       timestamptz,
  result_created_at  timestamptz,
  observed_at        timestamptz,
  analysed_at        timestamptz,
  patient_updated_at timestamptz,
  test_code          text,
  test_description   text,
  loinc_code         text,
  loinc_description  text,
  result_text        text,
  result_short       text,
  result_status      text,
  snomed_code        text,
  specimen_source    text,
  message_key        text,
  result_positive    text,
  ingested_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lab_rows_file ON lab_rows (file_id, line);

-- Row identity and its last sighting, kept apart from lab_rows so that marking the ~90% of each
-- export already seen rewrites narrow tuples, not wide ones. Fillfactor 50 leaves each page room to
-- rewrite every tuple on it in place (HOT, no new index entry): measured 20% faster than 70.
-- Ingest writes a lab_rows row and its key in one transaction; the primary key here is what makes
-- a row unique. A row seen only through another version's form also leaves its own checksum here
-- (no lab_rows row), since a later row may match it in its version. No foreign key to lab_rows: its per-row check cost as much as the rest of the insert.
CREATE TABLE lab_row_keys (
  checksum      bytea PRIMARY KEY,
  last_file_id  bigint NOT NULL REFERENCES files (id),
  last_seen_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

-- Rows that could not be used, kept for inspection with the reason.
CREATE TABLE ingest_errors (
  file_id  bigint NOT NULL REFERENCES files (id),
  line     int NOT NULL,
  county_fips int,
  reason   text NOT NULL,
  raw      text NOT NULL,
  PRIMARY KEY (file_id, line)
);
