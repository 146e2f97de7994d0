-- When each key was last used (the latest occurred_at counted), for key lists such as
-- OpenAI's "last used" column. One small row per key, kept by the batch transactions.
CREATE TABLE key_last_used (
    project_id text NOT NULL,
    key_id text NOT NULL,
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, key_id)
);

INSERT INTO key_last_used (project_id, key_id, last_used_at)
SELECT project_id, key_id, max(last_used_at) FROM usage_minute GROUP BY project_id, key_id;
