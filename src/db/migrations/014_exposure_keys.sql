-- Exposure's keyed hashes move from the raw HERALD_SECRET_KEY to keys derived from it per purpose
-- (HKDF: exposure:uuid, exposure:lookup). Nothing stored is recomputed (SQL has no secret, and a
-- stored uuid is the verification server's idempotency key for a code it may have issued): each
-- row says which key made it, 1 the raw secret, 2 the derived key. Rows already here are 1; rows
-- made from now on are 2 (a constant default: no table rewrite). src/exposure/keys.ts reads both.

-- The key a notice's uuid is (re)computed with: a notice made before this keeps the uuid it would have had.
ALTER TABLE exposure_notices ADD COLUMN uuid_key smallint NOT NULL DEFAULT 1;
ALTER TABLE exposure_notices ALTER COLUMN uuid_key SET DEFAULT 2;

-- The key of phone_hash: rows under 1 are read as well until they age out (HERALD_LOOKUP_CACHE_DAYS).
ALTER TABLE phone_lookups ADD COLUMN key_version smallint NOT NULL DEFAULT 1;
ALTER TABLE phone_lookups ALTER COLUMN key_version SET DEFAULT 2;
