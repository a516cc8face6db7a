-- How many decimals an instrument's prices show, from its feed's symbol metadata (NULL:
-- the feed does not say). Lists cached before it are marked stale so the next use
-- fetches them again with it (the old list keeps serving while that fails).
ALTER TABLE symbols ADD COLUMN price_decimals INTEGER;
UPDATE symbol_lists SET fetched_at = TIMESTAMP '1970-01-01 00:00:00';
