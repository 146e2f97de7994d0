-- Console sign-ins are audited too (login.succeeded, login.failed): their actor is the
-- console session, signed in as root or an admin key, or anonymous when the sign-in failed.
ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_actor_type_check;
ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_actor_type_check
    CHECK (actor_type IN ('root', 'admin_key', 'console_session'));
