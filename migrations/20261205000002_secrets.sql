-- Signing key states (portable SQL). Server secrets need no change: they
-- are sealed in place, in their `value` column, by the first node that
-- starts with a key-encryption key (see README, "Secrets at rest").
--
-- `active_from`: when a key may sign. A rotated key is published for the
-- JWKS cache lifetime before it signs; null (keys from before) means from
-- `created_at`.
alter table signing_key add column active_from bigint;
-- `revoked_at`: withdrawn at once, not published, not accepted, never
-- signing again.
alter table signing_key add column revoked_at bigint;
