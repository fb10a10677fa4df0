-- Risk decisions (issue 20). The review queue: a sign-in or a payment that
-- the risk rules held waits here for an admin, who approves or denies it
-- with a reason; its owner can see it and appeal with a message. An
-- approval lets one later attempt of the same kind and subject through
-- (`status` goes from approved to used), until `expires_at`.
create table risk_review (
    review_id       text primary key,
    user_id         text not null references app_user (user_id) on delete cascade,
    -- 'signin' or 'payment'
    kind            text not null,
    -- what an approval lets through: a payment's txn digest; for a
    -- sign-in, the factor it used ('passkey', 'password_totp', ...)
    subject         text not null,
    -- 'held', 'approved', 'denied', 'used'
    status          text not null,
    score           integer not null,
    -- JSON array of {"rule", "score", "words"}: never a secret
    reasons         text not null,
    -- JSON object for the reviewer (network, user-agent family, amount):
    -- never a secret
    context         text not null,
    -- keyed hash of the token that lets the user see and appeal it
    token_hash      text not null,
    created_at      bigint not null,
    expires_at      bigint not null,
    appeal          text,
    appealed_at     bigint,
    decided_at      bigint,
    decided_by      text,
    decision_reason text
);
create index risk_review_queue on risk_review (status, created_at);
create index risk_review_subject on risk_review (user_id, kind, subject);

-- Failures per minute by dimension ('network', 'account', 'device') and
-- key (a /24 or /48, a user id, a device id), and kind (the audit event):
-- the anomaly view, its alerts, and the failure-velocity signals read it.
-- Nodes add their counts; nothing here names a secret.
create table failure_minute (
    minute    bigint not null,
    dimension text not null,
    key       text not null,
    kind      text not null,
    count     bigint not null,
    primary key (minute, dimension, key, kind)
);
create index failure_minute_key on failure_minute (dimension, key, minute);
