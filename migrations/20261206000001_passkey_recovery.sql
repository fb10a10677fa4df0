-- Recovery codes for a passkey account (issue 18 item 2), apart from the
-- TOTP recovery codes in `recovery_code`: those are a second factor after
-- a password; these start the enrolment of a new passkey when every bound
-- one is lost. Stored only as HMACs under the server's code key, like
-- every other code. A new set replaces the old one.
create table passkey_recovery_code (
    user_id    text not null references app_user (user_id) on delete cascade,
    code_hash  text not null,
    used_at    bigint,
    created_at bigint not null,
    primary key (user_id, code_hash)
);

-- Account recovery by the verified address: an enrolment code that the
-- owner requested by mail and that works only from `valid_from` (a delay
-- in which the address is told and the owner can cancel with the token
-- whose hash is `cancel_hash`, or by signing in with a passkey). Null in
-- both for an admin's enrolment code, which works at once.
alter table enrolment_code add column valid_from bigint;
alter table enrolment_code add column cancel_hash text;
