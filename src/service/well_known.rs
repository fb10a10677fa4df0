//! Association files that let native apps and sister sites use this
//! relying party's passkeys, and the discovery document that lets a
//! service's JWT middleware find the token signing keys, built from
//! configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use url::Url;

use crate::config::Settings;

/// The claims passgate's access and payment authorization tokens carry.
const CLAIMS: [&str; 13] = [
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "sid",
    "amr",
    "roles",
    "device_id",
    "scope",
    "txn",
];

/// OpenID Connect Discovery 1.0 metadata, filled only with what is true of
/// passgate: it issues JWTs and publishes their keys, but it is not an
/// OpenID Provider (no authorization endpoint, no ID tokens, no OAuth
/// flows). JWT middleware that reads `issuer` and `jwks_uri` (Spring's
/// `issuer-uri`, ASP.NET's `Authority`, go-oidc) configures itself from it;
/// an OpenID client library starting a sign-in flow finds no
/// `authorization_endpoint` and stops, as it should.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenIdConfiguration {
    /// Exactly `tokens.issuer`: the `iss` of every token.
    pub issuer: String,
    /// The JWKS (RFC 7517) of the keys that sign tokens, absolute.
    pub jwks_uri: String,
    /// passgate's refresh endpoint: it takes `{"refresh_token": ...}` as
    /// JSON, not an OAuth 2.0 form-encoded grant.
    pub token_endpoint: String,
    /// Always `["none"]`: the refresh endpoint takes no client credentials.
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// Always empty: there is no OAuth authorization endpoint.
    pub response_types_supported: Vec<&'static str>,
    /// Always `["public"]`: `sub` is the user's id, the same for every
    /// service.
    pub subject_types_supported: Vec<&'static str>,
    /// The algorithms of the published signing keys (`ES256`, `EdDSA`);
    /// passgate signs access and authorization tokens with them (no ID
    /// tokens).
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub claims_supported: Vec<&'static str>,
    /// The OpenAPI description of the API.
    pub service_documentation: String,
}
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

    /// The discovery document for `algorithms` (those of the published
    /// keys), with every URL under `tokens.issuer`: it is served at
    /// `{issuer}/.well-known/openid-configuration`, so an issuer with a
    /// path (`https://example.com/auth`) assumes a proxy that maps that
    /// path to passgate's root. None when the issuer is not an http(s)
    /// URL without query or fragment: no library can use a document whose
    /// URLs are not absolute.
    pub fn openid_configuration(&self, algorithms: Vec<String>) -> Option<OpenIdConfiguration> {
        let issuer = &self.settings.tokens.issuer;
        let url = Url::parse(issuer).ok()?;
        let usable = matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.query().is_none()
            && url.fragment().is_none();
        if !usable {
            return None;
        }
        let base = issuer.trim_end_matches('/');
        Some(OpenIdConfiguration {
            issuer: issuer.clone(),
            jwks_uri: format!("{base}/.well-known/jwks.json"),
            token_endpoint: format!("{base}/v1/token/refresh"),
            token_endpoint_auth_methods_supported: vec!["none"],
            response_types_supported: Vec::new(),
            subject_types_supported: vec!["public"],
            id_token_signing_alg_values_supported: algorithms,
            claims_supported: CLAIMS.to_vec(),
            service_documentation: format!("{base}/openapi.json"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_issuer(issuer: &str) -> WellKnown {
        let env = [("PASSGATE__TOKENS__ISSUER".to_owned(), issuer.to_owned())];
        let settings = Settings::load_from(None, env.into_iter().collect());
        WellKnown::new(Arc::new(settings.unwrap()))
    }

    #[test]
    fn discovery_urls_live_under_the_issuer_path_included() {
        let document = with_issuer("https://example.com/auth").openid_configuration(vec![]);
        let document = document.unwrap();
        assert_eq!(document.issuer, "https://example.com/auth");
        assert_eq!(document.jwks_uri, "https://example.com/auth/.well-known/jwks.json");
        assert_eq!(document.token_endpoint, "https://example.com/auth/v1/token/refresh");
        let slash = with_issuer("https://example.com/").openid_configuration(vec![]).unwrap();
        assert_eq!(slash.issuer, "https://example.com/", "the issuer is kept exactly");
        assert_eq!(slash.jwks_uri, "https://example.com/.well-known/jwks.json");
    }

    #[test]
    fn an_issuer_that_is_not_an_http_url_has_no_discovery_document() {
        for issuer in ["passgate", "urn:passgate", "https://example.com/?x=1", "file:///tmp"] {
            assert!(with_issuer(issuer).openid_configuration(vec![]).is_none(), "{issuer}");
        }
    }
}
