-- Schema version 6: a stream entry is dead-lettered once; an oversized entry keeps its first bytes, size and SHA-256.
-- Frozen: never edit a released migration; add the next file instead.

DELETE FROM dead_letters WHERE id NOT IN
    (SELECT min(id) FROM dead_letters GROUP BY stream_id);

CREATE UNIQUE INDEX dead_letters_stream ON dead_letters(stream_id);

ALTER TABLE dead_letters ADD COLUMN raw_size INTEGER;

ALTER TABLE dead_letters ADD COLUMN raw_sha256 TEXT;
