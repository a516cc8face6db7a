-- A scanner's model filter (`model`, `min_probability`): each signal's score, and
-- whether it went on to the broker (NULL: the scanner has no model, every signal goes).
ALTER TABLE signals ADD COLUMN probability DOUBLE;
ALTER TABLE signals ADD COLUMN taken BOOLEAN;
