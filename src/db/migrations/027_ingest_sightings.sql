-- Sightings (issue 19): ingest no longer UPDATEs lab_row_keys for each row an export repeats (an
-- index probe plus a rewritten tuple in a table too large for shared_buffers, ~60% of the
-- database's work on a 90%-seen export). Each batch appends here the keys it sighted, in its own
-- transaction (exactly once, like its counters); after the file's last commit they are folded into
-- lab_row_keys (src/ingest/sightings.ts). A fold is one transaction that deletes what it applies:
-- a process that dies before or during it leaves the sightings here, and the next fold applies them.
-- seen_at is the batch's transaction time, the value the UPDATE used to write. No index and no
-- foreign key: each would cost per row what the append saves; the table holds only sightings not
-- yet folded (usually one file's), read whole by the fold.
CREATE TABLE ingest_sightings (
  file_id   bigint NOT NULL,
  checksum  bytea NOT NULL,
  seen_at   timestamptz NOT NULL DEFAULT now()
);

-- lab_row_keys as if every sighting were folded: the last sighting of each key, whichever is later.
-- For readers that cannot wait for the fold (none in the product today: ingest itself needs only
-- "already sighted by this file", which it knows).
CREATE VIEW lab_row_last_seen AS
SELECT k.checksum,
       CASE WHEN s.seen_at > k.last_seen_at THEN s.file_id ELSE k.last_file_id END AS last_file_id,
       greatest(s.seen_at, k.last_seen_at) AS last_seen_at
  FROM lab_row_keys k
  LEFT JOIN (SELECT DISTINCT ON (checksum) checksum, file_id, seen_at FROM ingest_sightings
              ORDER BY checksum, seen_at DESC) s ON s.checksum = k.checksum;
