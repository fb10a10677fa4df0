-- Anomaly alerts (issue 20 item 4). When the failures of one key in one
-- minute (summed over every node's counts in failure_minute) reach the
-- configured threshold, the first node to insert the alert's row sends
-- the webhook; the unique key makes the others' inserts do nothing, so
-- one crossing is one alert however many nodes see it.
create table anomaly_alert (
    alert_id     text primary key,
    -- what crossed: 'failures_per_minute'
    rule         text not null,
    -- 'network', 'account', 'device' or 'kind'
    dimension    text not null,
    -- a /24 or /48, a user id, a device id or an audit event name
    key          text not null,
    -- the minute that crossed (Unix time in whole minutes)
    window_start bigint not null,
    -- the audit event with most failures in that minute, if any
    kind         text,
    count        bigint not null,
    threshold    bigint not null,
    created_at   bigint not null,
    unique (rule, dimension, key, window_start)
);
create index anomaly_alert_key on anomaly_alert (rule, dimension, key, window_start);
create index anomaly_alert_created on anomaly_alert (created_at);

-- Every attempt to deliver an alert's webhook: its HTTP status, or what
-- went wrong before one came back (a class such as 'timeout', never the
-- URL or the secret).
create table anomaly_delivery (
    delivery_id text primary key,
    alert_id    text not null references anomaly_alert (alert_id) on delete cascade,
    attempt     integer not null,
    status_code integer,
    error       text,
    at          bigint not null
);
create index anomaly_delivery_at on anomaly_delivery (at);
create index anomaly_delivery_alert on anomaly_delivery (alert_id, attempt);
