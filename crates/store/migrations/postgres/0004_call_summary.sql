-- The end-of-call summary (the call-summary stage's JSON), shown on the
-- dashboard and in GET /api/sessions/{id}.
ALTER TABLE calls ADD COLUMN summary TEXT;
