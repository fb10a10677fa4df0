//! `[webauthn]` and `[apps]`: the relying party, the origins its passkeys
//! are used from, and the native apps that share them.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use url::Url;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebauthn {
    rp_id: String,
    rp_name: String,
    origins: Vec<String>,
    ceremony_ttl_seconds: u64,
    related_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApps {
    android: Vec<String>,
    ios: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct WebauthnSettings {
    pub rp_id: String,
    pub rp_name: String,
    pub origins: Vec<Url>,
    pub ceremony_ttl: Duration,
    pub related_origins: Vec<Url>,
}

/// Native apps that share this relying party's passkeys.
#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    pub android: Vec<AndroidApp>,
    /// `TEAMID.bundle.id`
    pub ios: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AndroidApp {
    pub package_name: String,
    /// SHA-256 of the app's signing certificate.
    pub cert_sha256: [u8; 32],
}

impl AndroidApp {
    /// The origin Android's Credential Manager puts in clientDataJSON.
    pub fn origin(&self) -> String {
        use base64::Engine;
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.cert_sha256);
        format!("android:apk-key-hash:{hash}")
    }

    /// The fingerprint as Digital Asset Links writes it: AA:BB:...
    pub fn fingerprint(&self) -> String {
        self.cert_sha256.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }
}

pub(super) fn validate_webauthn(raw: RawWebauthn) -> anyhow::Result<WebauthnSettings> {
    let rp_id = raw.rp_id.trim().to_ascii_lowercase();
    if rp_id.is_empty() || rp_id.contains(['/', ':', ' ']) {
        bail!("webauthn.rp_id: {:?} must be a bare domain such as wallet.example", raw.rp_id);
    }
    if raw.origins.is_empty() {
        bail!("webauthn.origins: at least one origin is required");
    }
    let mut origins = Vec::with_capacity(raw.origins.len());
    for text in raw.origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        origins.push(validate_origin(text, &rp_id)?);
    }
    if !origins.iter().any(|o| matches!(o.scheme(), "https" | "http")) {
        bail!("webauthn.origins: at least one web (https://) origin is required");
    }
    let ttl = raw.ceremony_ttl_seconds;
    if !(10..=3600).contains(&ttl) {
        bail!("webauthn.ceremony_ttl_seconds: {ttl} is outside 10..=3600");
    }
    let mut related_origins = Vec::new();
    for text in raw.related_origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let url = Url::parse(text)
            .ok()
            .filter(|u| u.scheme() == "https" && u.path() == "/" && u.host_str().is_some())
            .with_context(|| {
                format!("webauthn.related_origins: {text:?} must be an https origin with no path")
            })?;
        related_origins.push(url);
    }
    Ok(WebauthnSettings {
        rp_id,
        rp_name: raw.rp_name,
        origins,
        ceremony_ttl: Duration::from_secs(ttl),
        related_origins,
    })
}

/// A web origin must be covered by the RP id (WebAuthn §5.1.3: the RP id is
/// a registrable suffix of the origin's host); plain http only for
/// localhost, which browsers treat as a secure context. App origins
/// (`android:apk-key-hash:<base64url sha-256 of the signing cert>`) are
/// taken as they are, and must then match exactly.
fn validate_origin(text: &str, rp_id: &str) -> anyhow::Result<Url> {
    if let Some(hash) = text.strip_prefix("android:apk-key-hash:") {
        let plain = !hash.is_empty()
            && hash.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !plain {
            bail!("webauthn.origins: {text:?} must be android:apk-key-hash:<base64url>");
        }
        return Url::parse(text).with_context(|| format!("webauthn.origins: {text:?}"));
    }
    let url = Url::parse(text)
        .with_context(|| format!("webauthn.origins: {text:?} is not a valid origin"))?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!("webauthn.origins: {text:?} must be an origin (scheme://host[:port]) with no path");
    }
    match url.scheme() {
        "https" => {}
        "http" if host == "localhost" => {}
        _ => bail!("webauthn.origins: {text:?} must use https (http only for localhost)"),
    }
    if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
        bail!("webauthn.origins: {text:?} is not covered by webauthn.rp_id {rp_id:?}");
    }
    Ok(url)
}

pub(super) fn validate_apps(raw: RawApps) -> anyhow::Result<AppSettings> {
    let mut android = Vec::new();
    for entry in raw.android.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let refused = || {
            anyhow::anyhow!(
                "apps.android: {entry:?} must be package.name=AA:BB:... (32 hex bytes, the SHA-256 of the signing certificate)"
            )
        };
        let (package_name, fingerprint) = entry.split_once('=').ok_or_else(refused)?;
        let package_ok = package_name.contains('.')
            && package_name.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        let bytes: Vec<u8> = fingerprint
            .split(':')
            .map(|pair| if pair.len() == 2 { u8::from_str_radix(pair, 16).ok() } else { None })
            .collect::<Option<_>>()
            .ok_or_else(refused)?;
        let cert_sha256: [u8; 32] = bytes.try_into().map_err(|_| refused())?;
        if !package_ok {
            return Err(refused());
        }
        android.push(AndroidApp { package_name: package_name.to_owned(), cert_sha256 });
    }
    let mut ios = Vec::new();
    for entry in raw.ios.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let team_ok = entry.split_once('.').is_some_and(|(team, bundle)| {
            team.len() == 10
                && team.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && !bundle.is_empty()
        });
        if !team_ok {
            bail!("apps.ios: {entry:?} must be TEAMID.bundle.id (a 10-character team id)");
        }
        ios.push(entry.to_owned());
    }
    Ok(AppSettings { android, ios })
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::config::tests::{env, load_error};

    #[test]
    fn apps_and_related_origins_are_read_and_checked() {
        let fingerprint = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":");
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__APPS__ANDROID", &format!("com.wallet.app={fingerprint}")),
                ("PASSGATE__APPS__IOS", "ABCDE12345.com.wallet.app"),
                ("PASSGATE__WEBAUTHN__RELATED_ORIGINS", "https://wallet.example.org"),
            ]),
        )
        .unwrap();
        let app = &settings.apps.android[0];
        assert_eq!(app.fingerprint(), fingerprint);
        assert_eq!(
            app.origin(),
            "android:apk-key-hash:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        );
        assert_eq!(settings.apps.ios, ["ABCDE12345.com.wallet.app"]);
        assert_eq!(settings.webauthn.related_origins[0].as_str(), "https://wallet.example.org/");
        assert!(
            load_error(&[("PASSGATE__APPS__ANDROID", "com.wallet.app=AB:CD")])
                .contains("apps.android")
        );
        assert!(load_error(&[("PASSGATE__APPS__IOS", "com.wallet.app")]).contains("apps.ios"));
        assert!(
            load_error(&[("PASSGATE__WEBAUTHN__RELATED_ORIGINS", "http://x.example")])
                .contains("webauthn.related_origins")
        );
    }
}
