-- Stream partitions (docs/scaling.md): two partition streams can each hand out the
-- same stream id, so a dead letter is known by its stream and its stream id. Rows of
-- the single stream keep stream = ''.
ALTER TABLE dead_letters ADD COLUMN stream TEXT COLLATE "C" NOT NULL DEFAULT '';
DROP INDEX dead_letters_stream;
CREATE UNIQUE INDEX dead_letters_stream ON dead_letters(stream, stream_id);
