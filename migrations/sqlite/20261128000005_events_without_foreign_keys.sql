-- PostgreSQL drops the usage events' foreign keys in this migration (see its file). SQLite keeps
-- them: there they cost little, and dropping one would rebuild the whole table. The store deletes
-- an org's events and clears a deleted key from its events itself, on both databases.
SELECT 1;
