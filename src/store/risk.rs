//! What the risk signals read (issue 20 items 1-2): a user's history of
//! successful sign-ins and approved payments (`risk_history`), gathered in
//! one query with the other facts a decision weighs, and written back
//! after a success.

use async_trait::async_trait;
use std::sync::LazyLock;

use super::StoreResult;
use super::engine::{Arg, Engine, Sql};
use crate::clock::Millis;
use crate::domain::UserId;

/// What to look up for one decision, of whichever user's profile it
/// reads. Each value is matched exactly.
pub struct ProfileQuery<'a> {
    /// The client's /24 or /48 ('' when unknown): a history row, and the
    /// key of the network's failures.
    pub network: &'a str,
    pub user_agent: &'a str,
    pub credential: &'a str,
    /// The payment's currency ('' for a sign-in).
    pub currency: &'a str,
    /// Audit events (clone warnings, device resets) from this time on.
    pub events_since: Millis,
    /// Failures from this minute (Unix minutes) on.
    pub failures_since_minute: i64,
}

/// One fact of a profile: `(dimension, value, amount, at)`.
/// - history rows: their dimension and value, amount, last_seen;
/// - `event`: an audit event's name, 0, its latest time;
/// - `passkeys`: '', how many, the newest one's creation time;
/// - `waiting`: '', 0, the latest `payments_after` of the user's passkeys;
/// - `user`: '', 0, the account's creation time;
/// - `account_failures` / `network_failures`: '', the count, None.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ProfileFact {
    pub dimension: String,
    pub value: String,
    pub amount: i64,
    pub at: Option<Millis>,
}

/// One history row to write: seen now; `amount` is kept when larger.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    pub dimension: &'a str,
    pub value: &'a str,
    pub amount: i64,
}

impl<'a> Seen<'a> {
    /// The rows of a decision's `(dimension, value, amount)` list.
    pub fn all(rows: &'a [(&'static str, String, i64)]) -> Vec<Seen<'a>> {
        rows.iter()
            .map(|(dimension, value, amount)| Seen { dimension, value, amount: *amount })
            .collect()
    }
}

#[async_trait]
pub trait RiskStore: Send + Sync {
    /// Every fact a decision may weigh, in one read.
    async fn risk_profile(
        &self,
        user_id: &UserId,
        query: &ProfileQuery<'_>,
    ) -> StoreResult<Vec<ProfileFact>>;
    /// Records what a successful sign-in or payment looked like.
    async fn record_seen(
        &self,
        user_id: &UserId,
        seen: &[Seen<'_>],
        now: Millis,
    ) -> StoreResult<()>;
    /// Spends a fallback sign-in's mfa_token without opening a session (a
    /// risk decision refused it); false when it was gone already.
    async fn spend_mfa_token(&self, token_hash: &str) -> StoreResult<bool>;
}

/// Every fact in one row of scalar subqueries: the columns of
/// `RISK_PROFILE`, and of a sign-in's own read (`find_login_with_profile`),
/// given the SQL that names the user and the placeholders of the network,
/// user agent, credential, currency, events since and failures since.
pub(crate) fn profile_columns(
    user: &str,
    [net, agent, credential, currency, since, minute]: [&str; 6],
) -> String {
    let seen = |column: &str, dimension: &str, value: &str, name: &str| {
        format!(
            "(select max({column}) from risk_history where user_id = {user} \
             and dimension = '{dimension}' and value = {value}) as {name}"
        )
    };
    let event = |event: &str, name: &str| {
        format!(
            "(select max(occurred_at) from audit_event where user_id = {user} \
             and event = '{event}' and occurred_at >= {since}) as {name}"
        )
    };
    let failures = |dimension: &str, key: &str, name: &str| {
        format!(
            "(select cast(coalesce(sum(count), 0) as bigint) from failure_minute \
             where dimension = '{dimension}' and key = {key} and minute >= {minute}) as {name}"
        )
    };
    [
        seen("last_seen", "network", net, "network_seen"),
        seen("last_seen", "user_agent", agent, "user_agent_seen"),
        seen("last_seen", "credential", credential, "credential_seen"),
        seen("amount", "payment", currency, "payment_largest"),
        seen("last_seen", "payment", currency, "payment_seen"),
        format!(
            "(select max(last_seen) from risk_history where user_id = {user} \
             and dimension = 'signin') as signin_seen"
        ),
        event("clone_warning", "clone_warning_at"),
        event("devices_reset", "devices_reset_at"),
        format!(
            "(select cast(count(*) as bigint) from credential where user_id = {user}) as passkeys"
        ),
        format!(
            "(select max(created_at) from credential where user_id = {user}) as newest_passkey"
        ),
        format!(
            "(select max(payments_after) from credential where user_id = {user}) as waiting_until"
        ),
        format!("(select created_at from app_user where user_id = {user}) as user_created"),
        failures("account", user, "account_failures"),
        failures("network", net, "network_failures"),
    ]
    .join(", ")
}

/// Where a profile read binds its query (`profile_args`): $2 the
/// credential, $3 network, $4 user agent, $5 currency, $6 events since,
/// $7 failures since; $1 is the read's own.
pub(crate) const PROFILE_PLACES: [&str; 6] = ["$3", "$4", "$2", "$5", "$6", "$7"];

/// A profile read's values, in `PROFILE_PLACES`'s order after `first`.
pub(crate) fn profile_args<'a>(first: Arg<'a>, query: &ProfileQuery<'a>) -> [Arg<'a>; 7] {
    [
        first,
        query.credential.into(),
        query.network.into(),
        query.user_agent.into(),
        query.currency.into(),
        query.events_since.into(),
        query.failures_since_minute.into(),
    ]
}

/// A user's profile on its own (a payment's or fallback sign-in's
/// decision); one row, decoded by `ProfileRow`. $1 is the user.
static RISK_PROFILE: LazyLock<String> =
    LazyLock::new(|| format!("select {}", profile_columns("$1", PROFILE_PLACES)));

/// The profile's columns of one row (`profile_columns`).
#[derive(sqlx::FromRow)]
pub(crate) struct ProfileRow {
    network_seen: Option<Millis>,
    user_agent_seen: Option<Millis>,
    credential_seen: Option<Millis>,
    payment_largest: Option<i64>,
    payment_seen: Option<Millis>,
    signin_seen: Option<Millis>,
    clone_warning_at: Option<Millis>,
    devices_reset_at: Option<Millis>,
    passkeys: i64,
    newest_passkey: Option<Millis>,
    waiting_until: Option<Millis>,
    user_created: Option<Millis>,
    account_failures: i64,
    network_failures: i64,
}

impl ProfileRow {
    /// The facts the row holds, in `ProfileFact`'s shapes: a history row
    /// or an event only where there is one.
    pub(crate) fn facts(self, query: &ProfileQuery<'_>) -> Vec<ProfileFact> {
        let mut facts = Vec::with_capacity(12);
        let mut fact = |dimension: &str, value: &str, amount: i64, at: Option<Millis>| {
            facts.push(ProfileFact {
                dimension: dimension.to_owned(),
                value: value.to_owned(),
                amount,
                at,
            });
        };
        let seen = [
            ("network", query.network, self.network_seen),
            ("user_agent", query.user_agent, self.user_agent_seen),
            ("credential", query.credential, self.credential_seen),
            ("signin", "", self.signin_seen),
        ];
        for (dimension, value, at) in seen {
            if at.is_some() {
                fact(dimension, value, 0, at);
            }
        }
        if self.payment_seen.is_some() {
            fact("payment", query.currency, self.payment_largest.unwrap_or(0), self.payment_seen);
        }
        for (event, at) in
            [("clone_warning", self.clone_warning_at), ("devices_reset", self.devices_reset_at)]
        {
            if at.is_some() {
                fact("event", event, 0, at);
            }
        }
        fact("passkeys", "", self.passkeys, self.newest_passkey);
        fact("waiting", "", 0, self.waiting_until);
        if self.user_created.is_some() {
            fact("user", "", 0, self.user_created);
        }
        fact("account_failures", "", self.account_failures, None);
        fact("network_failures", "", self.network_failures, None);
        facts
    }
}

/// The most rows one success adds to the history (network, browser,
/// passkey, factor, sign-in; or one payment).
pub(crate) const MOST_SEEN: usize = 5;

/// An `insert` of `rows` history rows for the user bound as `user`, seen
/// at `at`; the rows' own values are bound from `$first` on, three each
/// (dimension, value, amount). With `when`, only if that condition holds
/// (a sign-in's text: only if its session was written). A registration's
/// and a sign-in's texts carry it too, so the history costs no round trip
/// of its own.
pub(crate) fn seen_insert(
    rows: usize,
    user: &str,
    at: &str,
    first: usize,
    when: Option<&str>,
) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let dimension = first + 3 * row;
            format!("(${dimension}, ${}, ${})", dimension + 1, dimension + 2)
        })
        .collect();
    // VALUES names its columns column1 to column3 on both engines; the
    // WHERE also tells SQLite that ON CONFLICT is not a join's ON.
    format!(
        "insert into risk_history \
         (user_id, dimension, value, amount, first_seen, last_seen) \
         select {user}, column1, column2, column3, {at}, {at} from (values {}) as seen \
         where {} \
         on conflict (user_id, dimension, value) do update set \
         last_seen = excluded.last_seen, \
         amount = case when excluded.amount > risk_history.amount \
         then excluded.amount else risk_history.amount end",
        values.join(", "),
        when.unwrap_or("true")
    )
}

/// One text for each number of history rows a write carries, 0 to
/// `MOST_SEEN`: `make` gets the history's insert (`seen_insert` with these
/// arguments), None for no rows.
pub(crate) fn texts_by_history<T>(
    user: &str,
    at: &str,
    first: usize,
    when: Option<&str>,
    make: impl Fn(Option<String>) -> T,
) -> Vec<T> {
    (0..=MOST_SEEN)
        .map(|rows| make((rows > 0).then(|| seen_insert(rows, user, at, first, when))))
        .collect()
}

/// The history rows a write's own text carries; any beyond `MOST_SEEN`
/// follow in a statement of their own.
pub(crate) fn inline_seen<'s, 'a>(seen: &'s [Seen<'a>]) -> &'s [Seen<'a>] {
    &seen[..seen.len().min(MOST_SEEN)]
}

/// The text of `texts_by_history` for these rows (`inline_seen`).
pub(crate) fn text_for<'t, T>(texts: &'t [T], seen: &[Seen<'_>]) -> StoreResult<&'t T> {
    texts.get(inline_seen(seen).len()).ok_or_else(|| {
        super::StoreError::Other(anyhow::anyhow!("more history rows than a text takes"))
    })
}

/// The values `seen_insert` binds, in its order.
pub(crate) fn seen_args<'a>(seen: &'a [Seen<'a>]) -> impl Iterator<Item = Arg<'a>> + 'a {
    seen.iter().flat_map(|row| [row.dimension.into(), row.value.into(), row.amount.into()])
}

/// `insert` texts for 1 to `MOST_SEEN` rows: the rows of one success go
/// in one statement, one round trip, which SQLite may group with other
/// writes. `$1` is the user, `$2` the time.
static RECORD_SEEN: LazyLock<Vec<String>> =
    LazyLock::new(|| (1..=MOST_SEEN).map(|rows| seen_insert(rows, "$1", "$2", 3, None)).collect());

#[async_trait]
impl<E: Engine> RiskStore for E {
    async fn risk_profile(
        &self,
        user_id: &UserId,
        query: &ProfileQuery<'_>,
    ) -> StoreResult<Vec<ProfileFact>> {
        let args = profile_args(user_id.into(), query);
        // On SQLite this may see a group's writes not yet committed (as
        // the sign-in's own read does): a profile is a judgement, and
        // waiting for the group's commit here would end every group at
        // its first sign-in, one commit per sign-in instead of per group.
        let row: ProfileRow = self.read_db().await?.fetch_one(&RISK_PROFILE, &args).await?;
        Ok(row.facts(query))
    }

    async fn record_seen(
        &self,
        user_id: &UserId,
        seen: &[Seen<'_>],
        now: Millis,
    ) -> StoreResult<()> {
        for rows in seen.chunks(MOST_SEEN) {
            let mut args: Vec<Arg<'_>> = vec![user_id.into(), now.into()];
            args.extend(seen_args(rows));
            let Some(text) = RECORD_SEEN.get(rows.len() - 1) else { continue };
            self.execute_shared(text, &args).await?;
        }
        Ok(())
    }

    async fn spend_mfa_token(&self, token_hash: &str) -> StoreResult<bool> {
        let sql = "delete from mfa_token where token_hash = $1";
        Ok(self.db().await?.execute(sql, &[token_hash.into()]).await? == 1)
    }
}
