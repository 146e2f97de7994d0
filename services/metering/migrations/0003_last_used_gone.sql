-- "Last used" is derived once, by the key service (services/keys/handlers.py: each key's
-- last_used_at, shown on its key object and the console's key list, as OpenAI shows it).
-- Metering kept its own copy (key_last_used, usage_minute.last_used_at): gone.
DROP TABLE key_last_used;
ALTER TABLE usage_minute DROP COLUMN last_used_at;
