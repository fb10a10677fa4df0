-- Risk decisions (issue 20): what a user's successful sign-ins and approved
-- payments looked like, so that the risk signals can tell a new network,
-- browser or passkey from a known one, and a payment's amount from the
-- usual ones. One row per user, dimension and value:
--   'network'    a /24 (IPv4) or /48 (IPv6) network, e.g. '203.0.113.0/24'
--   'user_agent' a browser and system family, e.g. 'firefox/linux'
--   'credential' a passkey's credential id
--   'factor'     'passkey', 'password_totp', 'password_mail', 'recovery_code'
--   'signin'     '' : last_seen is the last successful sign-in
--   'payment'    a currency: amount is the largest approved amount, in
--                thousandths of its unit
-- Never a secret; only successful sign-ins (and registrations) are written,
-- so a failed attempt does not make its network known.
create table risk_history (
    user_id    text not null references app_user (user_id) on delete cascade,
    dimension  text not null,
    value      text not null,
    amount     bigint not null,
    first_seen bigint not null,
    last_seen  bigint not null,
    primary key (user_id, dimension, value)
);
