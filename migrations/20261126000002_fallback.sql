-- Fallback sign-in: a password plus a second factor (TOTP, an emailed
-- one-time code, or a recovery code), and the counters that throttle it.
-- Portable SQL, as in the core schema.

-- argon2id in PHC string format; re-hashed when the parameters change.
create table user_password (
    user_id    text primary key references app_user (user_id) on delete cascade,
    phc        text not null,
    updated_at bigint not null
);

-- One TOTP secret per user, sealed (ChaCha20-Poly1305) when a key is
-- configured. `confirmed_at` is null until a code proves the enrolment.
-- `last_step` is the newest 30-second step accepted, so that no code is
-- ever accepted twice.
create table user_totp (
    user_id      text primary key references app_user (user_id) on delete cascade,
    secret       text not null,
    confirmed_at bigint,
    last_step    bigint not null default 0,
    created_at   bigint not null
);

-- Recovery codes, stored as keyed hashes; `used_at` marks a spent one.
create table recovery_code (
    user_id    text not null references app_user (user_id) on delete cascade,
    code_hash  text not null,
    used_at    bigint,
    created_at bigint not null,
    primary key (user_id, code_hash)
);

-- The short-lived, single-purpose token between the password step and the
-- second factor. Stored as SHA-256; taken (deleted) when it signs in.
create table mfa_token (
    token_hash text primary key,
    user_id    text not null references app_user (user_id) on delete cascade,
    expires_at bigint not null,
    created_at bigint not null
);
create index mfa_token_expires_at_idx on mfa_token (expires_at);

-- Mailed one-time codes (email verification, email sign-in), one live
-- code per purpose and user, stored as keyed hashes. `address` is the
-- address the code was sent to (what a verification confirms).
create table email_code (
    purpose    text not null,
    user_id    text not null references app_user (user_id) on delete cascade,
    code_hash  text not null,
    address    text not null,
    tries      integer not null default 0,
    sent_at    bigint not null,
    expires_at bigint not null,
    primary key (purpose, user_id)
);

-- Fixed-window request counters (per client IP, per endpoint group),
-- shared by every node through the database.
create table rate_window (
    bucket      text primary key,
    hits        bigint not null,
    window_ends bigint not null
);
create index rate_window_window_ends_idx on rate_window (window_ends);

-- Consecutive sign-in failures per account name (known or not, so that a
-- lockout tells nothing about which names exist), and the lockout they
-- caused.
create table login_failure (
    subject      text primary key,
    failures     bigint not null,
    locked_until bigint not null,
    updated_at   bigint not null
);
