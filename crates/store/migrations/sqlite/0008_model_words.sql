-- A suggestion or question mostly in the language model's words (the host
-- decides from the model's replies); the dashboard says so.
ALTER TABLE suggestions ADD COLUMN model_written INTEGER NOT NULL DEFAULT 0;
ALTER TABLE questions ADD COLUMN model_written INTEGER NOT NULL DEFAULT 0;
-- A transcript line translated for the agent by the `translator` stage.
ALTER TABLE segments ADD COLUMN translation TEXT;
ALTER TABLE segments ADD COLUMN translation_language TEXT;
