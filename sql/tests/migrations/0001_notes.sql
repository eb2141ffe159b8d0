-- Works on SQLite and PostgreSQL alike.
CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    pinned BOOLEAN
);
