-- Each stored write of an account moves its book's version on: a process whose copy is behind reloads it first.
ALTER TABLE books ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
