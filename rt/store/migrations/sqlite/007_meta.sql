-- What the store remembers about how it is used: fingerprints of the key pepper and the secret key it was first
-- opened with (HMAC-SHA256 of a fixed label, never the secret), so a process configured with others refuses to start.
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
