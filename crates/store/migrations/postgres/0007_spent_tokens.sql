-- Media-stream token nonces already used, kept until the token expires: a
-- token replayed to any host sharing this database starts no second stream.
CREATE TABLE spent_tokens (
    nonce       TEXT PRIMARY KEY,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX spent_tokens_expiry ON spent_tokens (expires_at);
