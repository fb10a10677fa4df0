-- Bound devices, admin and the audit trail.

-- One row per security event, never updated or deleted (the server adds
-- guards against both at start, per engine). `event_id` is a UUIDv7, so
-- ids sort by time and page through large exports. No secrets: ids,
-- names of events, outcomes and reasons only. No foreign keys: the
-- record outlives the accounts it mentions.
create table audit_event (
    event_id    text primary key,
    occurred_at bigint not null,
    event       text not null,
    outcome     text not null,
    user_id     text,
    actor_id    text,
    device_id   text,
    client_ip   text,
    user_agent  text,
    reason      text,
    request_id  text
);
create index audit_event_user_id_idx on audit_event (user_id, event_id);
create index audit_event_event_idx on audit_event (event, event_id);
create index audit_event_occurred_at_idx on audit_event (occurred_at);

-- The one-time code an admin's device reset mails, with which the user
-- binds a new passkey (POST /v1/enrol/start|finish). Stored as a keyed
-- hash; taken when used.
create table enrolment_code (
    user_id    text primary key references app_user (user_id) on delete cascade,
    code_hash  text not null,
    tries      integer not null default 0,
    expires_at bigint not null,
    created_at bigint not null
);
