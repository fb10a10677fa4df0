//! Accounts from the server's command line: the first admin of a new
//! deployment, the break-glass reset when no admin can sign in, and the
//! admin role. Each runs against the server's database, safely while it
//! serves, and is audited with the actor `cli`.

use std::sync::Arc;

use anyhow::bail;
use passgate::clock::{Clock, SystemClock, rfc3339};
use passgate::config::Settings;
use passgate::domain::Username;
use passgate::service::Core;
use passgate::store::UserRow;

async fn core(settings: Settings) -> anyhow::Result<Core> {
    let store = passgate::store::connect(&settings.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Core::new(settings, store, clock).await
}

/// The account named `username`, or a one-line refusal.
async fn account(core: &Core, username: &str) -> anyhow::Result<UserRow> {
    let name = Username::parse(username.to_owned())?;
    match core.store.find_user_by_username(name.as_ref()).await? {
        Some(user) => Ok(user),
        None => bail!("no account named {:?}", name.as_ref()),
    }
}

/// Where a person binds a passkey with an enrolment code.
fn enrol_page(settings: &Settings) -> String {
    let origin = settings.webauthn.origins.iter().find(|o| matches!(o.scheme(), "https" | "http"));
    match origin {
        Some(origin) => format!("{}/enrol.html", origin.as_str().trim_end_matches('/')),
        None => "/enrol.html".to_owned(),
    }
}

/// A service refusal as one line, with its cause when it has one.
fn refused(error: passgate::error::ApiError) -> anyhow::Error {
    anyhow::Error::new(error)
}

pub async fn create(settings: Settings, username: &str, admin: bool) -> anyhow::Result<()> {
    let name = Username::parse(username.to_owned())?;
    let core = core(settings).await?;
    let created = match core.admin.create_user_by_operator(&name, admin).await {
        Err(passgate::error::ApiError::UsernameTaken) => {
            bail!("an account named {:?} already exists", name.as_ref())
        }
        other => other.map_err(refused)?,
    };
    println!(
        "created {} (user id {}, roles [{}])",
        created.username,
        created.user_id,
        created.roles.join(", ")
    );
    println!("enrolment code: {}", created.enrolment_code);
    println!(
        "It works once, until {}: at {} enter the username and this code to bind a first passkey.",
        rfc3339(created.code_expires_at),
        enrol_page(&core.settings)
    );
    Ok(())
}

pub async fn reset_devices(settings: Settings, username: &str, reason: &str) -> anyhow::Result<()> {
    let core = core(settings).await?;
    let user = account(&core, username).await?;
    let outcome = core
        .admin
        .reset_devices_by_operator(&user.user_id.to_string(), reason)
        .await
        .map_err(refused)?;
    let Some(code) = outcome.enrolment_code else {
        bail!("the reset made no enrolment code");
    };
    println!(
        "reset {}: {} passkeys unbound, {} sessions ended",
        user.username, outcome.revoked_devices, outcome.revoked_sessions
    );
    println!("enrolment code: {code}");
    println!(
        "It works once, for 24 hours: at {} enter the username and this code to bind a new passkey.",
        enrol_page(&core.settings)
    );
    Ok(())
}

/// `admin grant|revoke`: the role is one column, and tokens pick it up at
/// their next refresh.
pub async fn set_admin(settings: Settings, grant: bool, username: &str) -> anyhow::Result<()> {
    let core = core(settings).await?;
    let user = account(&core, username).await?;
    let mut roles = user.roles.names().to_vec();
    roles.retain(|r| r != "admin");
    if grant {
        roles.push("admin".to_owned());
    }
    let reason = if grant {
        "granted with passgate admin grant"
    } else {
        "revoked with passgate admin revoke"
    };
    core.admin
        .set_roles(None, &user.user_id.to_string(), &roles, Some(reason))
        .await
        .map_err(refused)?;
    println!("{}: roles [{}]", user.username, roles.join(", "));
    Ok(())
}
