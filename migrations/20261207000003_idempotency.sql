-- Idempotency-Key (issue 20 item 6): the first answer to a request made
-- with a key, so that a retry with the same key gets that answer instead
-- of doing it again. One row per caller, operation and key; rows go once
-- `expires_at` has passed (housekeeping).
create table idempotency_key (
    -- keyed hash of (caller, method and route, the client's key): neither
    -- the key nor the caller is stored
    key_hash    text primary key,
    -- keyed hash of the request (method, path, query, canonical body): the
    -- same key with another request is refused
    fingerprint text not null,
    -- the attempt that holds the row: only it stores the answer
    attempt     text not null,
    -- 'pending' while the first request runs, 'done' once its answer is in
    state       text not null,
    -- while pending: past this, the attempt is taken to have died, and a
    -- retry with the same request may run it again
    lease_until bigint not null,
    -- once done: the answer's HTTP status, and its headers and body sealed
    -- under a key derived from the client's key (a copy of the database
    -- alone opens none of them)
    status      integer,
    answer      text,
    created_at  bigint not null,
    expires_at  bigint not null
);
create index idempotency_key_expiry on idempotency_key (expires_at);
