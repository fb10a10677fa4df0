//! `[server]`: where and how passgate listens, and whose forwarded
//! addresses it believes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;

use crate::net::TrustedProxies;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    bind: String,
    /// Empty: /metrics and /v1/admin are served on `bind` with the rest.
    #[serde(default)]
    admin_bind: String,
    static_dir: PathBuf,
    trust_request_id: bool,
    trusted_proxies: Vec<String>,
    /// Replaced by `trusted_proxies`; still read for one release so that
    /// a deployment that set it is told what to do instead.
    #[serde(default)]
    trust_forwarded_for: Option<bool>,
    workers: usize,
    request_timeout_seconds: u64,
    cors_origins: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// When set, /metrics and /v1/admin/... are served here only.
    pub admin_bind: Option<SocketAddr>,
    pub static_dir: PathBuf,
    pub trust_request_id: bool,
    /// Proxies whose X-Forwarded-For entries name the client.
    pub trusted_proxies: TrustedProxies,
    /// 0 means one worker per core.
    pub workers: usize,
    /// The longest a request may take; past it the caller gets a 503.
    pub request_timeout: Duration,
    /// Web origins (`scheme://host[:port]`) whose pages may call the API
    /// from the browser; empty means no CORS headers at all.
    pub cors_origins: Vec<String>,
}

/// Reads the server section; `warnings` gets what an operator should
/// change but that still starts.
pub(super) fn validate_server(
    raw: RawServer,
    warnings: &mut Vec<String>,
) -> anyhow::Result<ServerSettings> {
    let bind: SocketAddr = raw.bind.parse().with_context(|| {
        format!("server.bind: {:?} is not an address like 127.0.0.1:8080", raw.bind)
    })?;
    let admin_bind = validate_admin_bind(&raw.admin_bind, bind)?;
    if raw.request_timeout_seconds == 0 {
        bail!("server.request_timeout_seconds: must be at least 1");
    }
    let trusted_proxies = validate_trusted_proxies(&raw.trusted_proxies, raw.trust_forwarded_for)?;
    if raw.trust_forwarded_for.is_some() {
        warnings.push(
            "server.trust_forwarded_for is ignored (server.trusted_proxies decides whose \
             X-Forwarded-For is read) and will be refused in the next release: remove it"
                .to_owned(),
        );
    }
    Ok(ServerSettings {
        bind,
        admin_bind,
        static_dir: raw.static_dir,
        trust_request_id: raw.trust_request_id,
        trusted_proxies,
        workers: raw.workers,
        request_timeout: Duration::from_secs(raw.request_timeout_seconds),
        cors_origins: validate_cors_origins(&raw.cors_origins)?,
    })
}

/// The operators' listener: another port than `bind`'s (the same port on
/// an overlapping address could not be bound, or would split one
/// listener's connections between two servers).
fn validate_admin_bind(text: &str, bind: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let admin: SocketAddr = text.parse().with_context(|| {
        format!("server.admin_bind: {text:?} is not an address like 127.0.0.1:9090")
    })?;
    let overlapping =
        admin.ip() == bind.ip() || admin.ip().is_unspecified() || bind.ip().is_unspecified();
    if admin.port() != 0 && admin.port() == bind.port() && overlapping {
        bail!("server.admin_bind: {admin} must differ from server.bind ({bind}): use another port");
    }
    Ok(Some(admin))
}

/// Exact origins, serialised as a browser sends them in `Origin` (lower
/// case, no default port), since CORS compares them as strings. `*` is
/// refused: bearer tokens ride in `Authorization`, and any site being able
/// to read the API's answers is never what an operator means.
fn validate_cors_origins(list: &[String]) -> anyhow::Result<Vec<String>> {
    let mut origins = Vec::new();
    for text in list.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if text.contains('*') {
            bail!(
                "server.cors_origins: {text:?} is a wildcard; list each origin that may call \
                 the API, such as https://wallet.example"
            );
        }
        let refused = || {
            anyhow::anyhow!(
                "server.cors_origins: {text:?} is not an origin like https://wallet.example \
                 or http://localhost:3000 (a scheme, a host and an optional port; no path)"
            )
        };
        let url = url::Url::parse(text).map_err(|_| refused())?;
        let bare = url.path() == "/" && !text.ends_with('/');
        let web = matches!(url.scheme(), "http" | "https") && url.host().is_some();
        let plain = url.username().is_empty() && url.password().is_none();
        if !web || !bare || !plain || url.query().is_some() || url.fragment().is_some() {
            return Err(refused());
        }
        let origin = url.origin().ascii_serialization();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// CIDRs (a bare address is a single host). A prefix with host bits set
/// (`10.0.0.1/8`) is refused rather than rounded: it is more likely a
/// mistyped single address than a wish to trust a whole network.
fn validate_trusted_proxies(
    list: &[String],
    trust_forwarded_for: Option<bool>,
) -> anyhow::Result<TrustedProxies> {
    let mut networks = Vec::new();
    for text in list.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let network = match text.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                anyhow::anyhow!(
                    "server.trusted_proxies: {text:?} is not a CIDR such as 10.0.0.0/8 or ::1/128"
                )
            })?,
        };
        if network.addr() != network.network() {
            bail!(
                "server.trusted_proxies: {text:?} has host bits set; write {} for the network or {} for the one address",
                network.trunc(),
                IpNet::from(network.addr())
            );
        }
        networks.push(network);
    }
    if trust_forwarded_for == Some(true) && networks.is_empty() {
        bail!(
            "server.trust_forwarded_for is replaced by server.trusted_proxies: list the proxies \
             in front of passgate as CIDRs (PASSGATE__SERVER__TRUSTED_PROXIES=10.0.0.0/8,::1/128) \
             and remove server.trust_forwarded_for (PASSGATE__SERVER__TRUST_FORWARDED_FOR)"
        );
    }
    Ok(TrustedProxies::new(networks))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Settings;
    use crate::config::tests::{env, load_error};

    #[test]
    fn trusted_proxies_are_cidrs_from_a_comma_separated_variable() {
        let settings = Settings::load_from(
            None,
            env(&[("PASSGATE__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, ::1/128,192.0.2.7")]),
        )
        .unwrap();
        let expected = ["10.0.0.0/8", "::1/128", "192.0.2.7/32"].map(|n| n.parse().unwrap());
        assert_eq!(settings.server.trusted_proxies, TrustedProxies::new(expected.to_vec()));
        assert!(
            Settings::load_from(None, HashMap::new()).unwrap().server.trusted_proxies.is_empty()
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.1/8"] {
            let error = load_error(&[("PASSGATE__SERVER__TRUSTED_PROXIES", bad)]);
            assert!(error.contains("server.trusted_proxies"), "{bad}: {error}");
        }
        assert!(
            load_error(&[("PASSGATE__SERVER__TRUSTED_PROXIES", "10.0.0.1/8")])
                .contains("10.0.0.0/8")
        );
    }

    #[test]
    fn admin_bind_is_off_by_default_and_must_differ_from_bind() {
        assert_eq!(Settings::load_from(None, HashMap::new()).unwrap().server.admin_bind, None);
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SERVER__BIND", "0.0.0.0:8080"),
                ("PASSGATE__SERVER__ADMIN_BIND", "127.0.0.1:9090"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.server.admin_bind, Some("127.0.0.1:9090".parse().unwrap()));
        for (bind, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "[::]:8080"),
        ] {
            let error = load_error(&[
                ("PASSGATE__SERVER__BIND", bind),
                ("PASSGATE__SERVER__ADMIN_BIND", admin),
            ]);
            assert!(
                error.contains("server.admin_bind") && error.contains("must differ"),
                "{bind} {admin}: {error}"
            );
        }
        let error = load_error(&[("PASSGATE__SERVER__ADMIN_BIND", "localhost")]);
        assert!(error.contains("server.admin_bind") && error.contains("\"localhost\""), "{error}");
        // Another address on the same port is another listener.
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SERVER__BIND", "127.0.0.1:8080"),
                ("PASSGATE__SERVER__ADMIN_BIND", "127.0.0.2:8080"),
            ]),
        );
        assert!(settings.is_ok());
    }

    #[test]
    fn the_old_trust_forwarded_for_is_refused_without_trusted_proxies() {
        let error = load_error(&[("PASSGATE__SERVER__TRUST_FORWARDED_FOR", "true")]);
        assert!(
            error.contains("server.trust_forwarded_for")
                && error.contains("server.trusted_proxies"),
            "{error}"
        );
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SERVER__TRUST_FORWARDED_FOR", "true"),
                ("PASSGATE__SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
            ]),
        )
        .unwrap();
        assert!(settings.warnings.iter().any(|w| w.contains("server.trust_forwarded_for")));
        let off =
            Settings::load_from(None, env(&[("PASSGATE__SERVER__TRUST_FORWARDED_FOR", "false")]));
        assert!(off.unwrap().server.trusted_proxies.is_empty());
        assert!(Settings::load_from(None, HashMap::new()).unwrap().warnings.is_empty());
    }

    #[test]
    fn cors_origins_are_exact_web_origins_and_never_a_wildcard() {
        let settings = Settings::load_from(
            None,
            env(&[(
                "PASSGATE__SERVER__CORS_ORIGINS",
                "https://Wallet.Example, http://localhost:3000,https://wallet.example:443",
            )]),
        )
        .unwrap();
        assert_eq!(
            settings.server.cors_origins,
            ["https://wallet.example", "http://localhost:3000"]
        );
        assert!(Settings::load_from(None, HashMap::new()).unwrap().server.cors_origins.is_empty());
        for bad in [
            "*",
            "https://*.example",
            "wallet.example",
            "https://wallet.example/",
            "https://wallet.example/app",
            "https://wallet.example?x=1",
            "https://user@wallet.example",
            "ftp://wallet.example",
            "android:apk-key-hash:abc",
        ] {
            let error = load_error(&[("PASSGATE__SERVER__CORS_ORIGINS", bad)]);
            assert!(error.contains("server.cors_origins"), "{bad}: {error}");
        }
    }
}
