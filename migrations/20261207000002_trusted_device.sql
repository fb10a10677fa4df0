-- Trusted browsers (issue 20 item 5). After a fresh, user-verified passkey
-- sign-in the owner may mark the browser trusted: it gets a random 256-bit
-- token in an HttpOnly `__Host-` cookie, and this row holds only a keyed
-- hash of it (HMAC under the server's one-time-code key, bound to the user),
-- so a copy of the database can neither present nor recognise a token. A
-- trusted browser lowers the risk score of its sign-ins and payments until
-- `expires_at`, or until it is revoked: by its owner, or by an admin's (or
-- the operator's) device reset.
create table trusted_device (
    trusted_device_id text primary key,
    user_id           text not null references app_user (user_id) on delete cascade,
    token_hash        text not null,
    -- the browser family and system, from a fixed list of words (never the
    -- user agent as sent), e.g. 'Chrome on Linux'
    label             text not null,
    created_at        bigint not null,
    last_seen_at      bigint not null,
    expires_at        bigint not null,
    revoked_at        bigint
);
create unique index trusted_device_token_key on trusted_device (token_hash);
create index trusted_device_user_idx on trusted_device (user_id);
