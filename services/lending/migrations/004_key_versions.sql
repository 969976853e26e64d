-- A party may register a key again after another: each registration is a
-- version, and the version names its journal entry.
ALTER TABLE signing_keys ADD COLUMN version integer NOT NULL DEFAULT 1;
