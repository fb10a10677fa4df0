-- passgate core schema. Portable SQL: the same text runs on SQLite and
-- PostgreSQL. Ids are text (UUIDs, base64url), times are bigint Unix
-- milliseconds (UTC), binary values are base64url or JSON text.

create table app_user (
    user_id        text primary key,
    username       text not null,
    display_name   text not null,
    email          text,
    email_verified boolean not null default false,
    roles          text not null default '',
    locked_at      bigint,
    created_at     bigint not null
);
create unique index app_user_username_key on app_user (username);

-- One row per bound passkey. `passkey` is webauthn-rs's serialised
-- credential (public key, counter, flags); the other columns repeat what
-- listing and policy need without parsing it.
create table credential (
    credential_id   text primary key,
    device_id       text not null,
    user_id         text not null references app_user (user_id) on delete cascade,
    name            text not null,
    passkey         text not null,
    sign_count      bigint not null,
    backup_eligible boolean not null,
    backup_state    boolean not null,
    aaguid          text not null,
    transports      text not null,
    created_at      bigint not null,
    last_used_at    bigint
);
create unique index credential_device_id_key on credential (device_id);
create index credential_user_id_idx on credential (user_id);

-- Started WebAuthn ceremonies, taken (deleted) exactly once at finish.
create table ceremony (
    ceremony_id text primary key,
    kind        text not null,
    user_id     text,
    state       text not null,
    expires_at  bigint not null
);
create index ceremony_expires_at_idx on ceremony (expires_at);

create table session (
    session_id   text primary key,
    user_id      text not null references app_user (user_id) on delete cascade,
    device_id    text,
    amr          text not null,
    client_ip    text,
    user_agent   text,
    created_at   bigint not null,
    last_used_at bigint not null,
    expires_at   bigint not null,
    revoked_at   bigint
);
create index session_user_id_idx on session (user_id);

-- Refresh tokens are stored only as SHA-256 (hex). A retired token stays
-- so that its reuse can be recognised and its session ended.
create table refresh_token (
    token_hash text primary key,
    session_id text not null references session (session_id) on delete cascade,
    created_at bigint not null,
    retired_at bigint
);
create index refresh_token_session_id_idx on refresh_token (session_id);

create table signing_key (
    kid         text primary key,
    algorithm   text not null,
    private_key text not null,
    public_jwk  text not null,
    created_at  bigint not null,
    retired_at  bigint
);

-- Secrets every node must share (e.g. the key that makes up credential
-- ids for unknown usernames). First writer wins.
create table server_secret (
    name       text primary key,
    value      text not null,
    created_at bigint not null
);
