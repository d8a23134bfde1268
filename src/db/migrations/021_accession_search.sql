-- The console's person search by accession number (src/link/trace.ts, searchPeople): lab_results'
-- own unique key starts with the case, so without this a search reads every lab result.
CREATE INDEX lab_results_accession ON lab_results (accession_number);
