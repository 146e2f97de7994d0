-- replaces sha256:b85bda19cb42ec098d81b14baea4ed5ebf34c4e88191ac8634da71733c5560df
-- Operator access (README.md: "Access"): admin keys (hash and hint only, never the
-- secret) and the audit log of every change the key service makes.

CREATE TABLE admin_api_keys (
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id            text PRIMARY KEY,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    hint          text NOT NULL,
    key_hash      text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    -- The scope: the whole organization, or the listed projects (never both, never neither).
    organization  boolean NOT NULL,
    project_ids   text[] NOT NULL DEFAULT '{}',
    permissions   text[] NOT NULL CHECK (cardinality(permissions) >= 1),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    -- Who created it ({"type", "id", "hint"}): OpenAI's "owner".
    owner         jsonb NOT NULL CHECK (jsonb_typeof(owner) = 'object'),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    rotated_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    version       bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    CHECK (organization = (cardinality(project_ids) = 0))
);

-- One entry per change, written in the change's own transaction. Partitioned by month on
-- effective_at: the service creates the coming months' partitions ahead, and retention drops
-- whole partitions. The primary key holds the partition key, as PostgreSQL requires.
CREATE TABLE audit_logs (
    id            text NOT NULL,
    effective_at  timestamptz NOT NULL,
    type          text NOT NULL,
    actor_type    text NOT NULL CHECK (actor_type IN ('root', 'admin_key')),
    actor_id      text NOT NULL,
    actor_hint    text,
    project_id    text,
    resource_id   text NOT NULL,
    changes       jsonb NOT NULL,
    ip            text,
    user_agent    text,
    request_id    text,
    PRIMARY KEY (effective_at, id)
) PARTITION BY RANGE (effective_at);

CREATE INDEX audit_logs_by_id ON audit_logs (id);
CREATE INDEX audit_logs_by_project ON audit_logs (project_id, effective_at);
