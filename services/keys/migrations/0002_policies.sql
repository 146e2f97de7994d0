-- replaces sha256:1aaeb23eb7ffa19f3fd41297f342711411d962201dc073fccb75db1a2e276a38
-- Key policies (README.md: "Key policies"): rate limits, spend budgets, model and endpoint scopes.
-- NULL everywhere means no limit. Shapes are validated by the API (shared/policy.py); these
-- checks only keep a hand-written row from holding something no key state could carry.

ALTER TABLE api_keys
    ADD COLUMN rate_limits       jsonb CHECK (jsonb_typeof(rate_limits) = 'object'),
    ADD COLUMN budget            jsonb CHECK (jsonb_typeof(budget) = 'object'),
    ADD COLUMN allowed_models    text[] CHECK (cardinality(allowed_models) >= 1),
    ADD COLUMN allowed_endpoints text[] CHECK (cardinality(allowed_endpoints) >= 1);

-- A project's policy holds for all its keys together, and rides on each key's state.
ALTER TABLE projects
    ADD COLUMN rate_limits jsonb CHECK (jsonb_typeof(rate_limits) = 'object'),
    ADD COLUMN budget      jsonb CHECK (jsonb_typeof(budget) = 'object'),
    ADD COLUMN updated_at  timestamptz;

UPDATE projects SET updated_at = created_at;
ALTER TABLE projects ALTER COLUMN updated_at SET NOT NULL;
