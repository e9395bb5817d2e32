-- A question's confidence (the solutions stage's "A or B?" carries the
-- chance that one of the two is right); older rows were clarifier questions.
ALTER TABLE questions ADD COLUMN confidence REAL NOT NULL DEFAULT 1.0;
