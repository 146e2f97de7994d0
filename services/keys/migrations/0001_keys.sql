-- Projects, their API keys (hash and hint only, never the secret) and the transactional outbox.

CREATE TABLE projects (
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id          text PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    created_at  timestamptz NOT NULL
);

CREATE TABLE api_keys (
    seq                  bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                   text PRIMARY KEY,
    project_id           text NOT NULL REFERENCES projects (id),
    name                 text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    hint                 text NOT NULL,
    key_hash             text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    previous_key_hash    text CHECK (previous_key_hash ~ '^[0-9a-f]{64}$'),
    previous_valid_until timestamptz,
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    is_default           boolean NOT NULL DEFAULT false,
    expires_at           timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    rotated_at           timestamptz,
    revoked_at           timestamptz,
    last_used_at         timestamptz,
    version              bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    CHECK (NOT (is_default AND status = 'revoked')),
    CHECK ((previous_key_hash IS NULL) = (previous_valid_until IS NULL))
);

-- At most one default key per project, whatever races the API lets through.
CREATE UNIQUE INDEX api_keys_one_default ON api_keys (project_id) WHERE is_default;
CREATE INDEX api_keys_by_project ON api_keys (project_id, seq);
CREATE INDEX api_keys_previous_hash ON api_keys (previous_key_hash)
    WHERE previous_key_hash IS NOT NULL;

-- Written in the same transaction as the change it announces; the relay publishes and deletes.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text NOT NULL,
    message_key  text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
