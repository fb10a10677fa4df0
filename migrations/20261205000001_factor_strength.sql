-- Factor strength and a lockout that holds (security issue).

-- A passkey bound from a password sign-in (an account that had none) may
-- approve payments only from this time on; null: at once.
alter table credential add column payments_after bigint;

-- Failures since the lock's length last started over: the count in
-- `failures` runs until a successful sign-in however far apart the
-- failures are, while a quiet spell of limits.failure_window_seconds
-- starts the doubling of the lock's length over.
alter table login_failure add column streak bigint not null default 0;
