//! Association files that let native apps and sister sites use this
//! relying party's passkeys, built from configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::Settings;
/// The documents that bind apps and related origins to this relying party.
#[derive(Clone)]
pub struct WellKnown {
    settings: Arc<Settings>,
}

impl WellKnown {
    pub fn new(settings: Arc<Settings>) -> WellKnown {
        WellKnown { settings }
    }

    /// Digital Asset Links: each Android app may sign in with, and hand
    /// credentials to, this site. None when no app is configured.
    pub fn asset_links(&self) -> Option<Value> {
        let apps = &self.settings.apps.android;
        if apps.is_empty() {
            return None;
        }
        let mut by_package: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for app in apps {
            by_package.entry(&app.package_name).or_default().push(app.fingerprint());
        }
        let statements: Vec<Value> = by_package
            .into_iter()
            .map(|(package_name, fingerprints)| {
                json!({
                    "relation": [
                        "delegate_permission/common.handle_all_urls",
                        "delegate_permission/common.get_login_creds"
                    ],
                    "target": {
                        "namespace": "android_app",
                        "package_name": package_name,
                        "sha256_cert_fingerprints": fingerprints
                    }
                })
            })
            .collect();
        Some(Value::Array(statements))
    }

    /// Apple's association file: the iOS apps allowed to use this site's
    /// web credentials (passkeys). None when no app is configured.
    pub fn apple_app_site_association(&self) -> Option<Value> {
        let apps = &self.settings.apps.ios;
        (!apps.is_empty()).then(|| json!({ "webcredentials": { "apps": apps } }))
    }

    /// WebAuthn Related Origin Requests: the origins, beyond the RP id's
    /// own, allowed to use its passkeys. None when there are none.
    pub fn related_origins(&self) -> Option<Value> {
        let webauthn = &self.settings.webauthn;
        if webauthn.related_origins.is_empty() {
            return None;
        }
        let origins: Vec<String> = webauthn
            .origins
            .iter()
            .chain(&webauthn.related_origins)
            .filter(|o| o.scheme() == "https")
            .map(|o| o.origin().ascii_serialization())
            .collect();
        Some(json!({ "origins": origins }))
    }
}
