//! Reads what webauthn-rs does not keep from a registration: the AAGUID,
//! the backup flags and the initial counter, straight from the
//! attestation object's authenticator data (WebAuthn §6.1).

use uuid::Uuid;

const FLAG_BACKUP_ELIGIBLE: u8 = 0x08;
const FLAG_BACKUP_STATE: u8 = 0x10;
const FLAG_ATTESTED_DATA: u8 = 0x40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationFacts {
    pub aaguid: Uuid,
    pub counter: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

/// `None` when the object is not the CBOR map the spec describes; callers
/// only reach here after webauthn-rs verified the same bytes.
pub fn registration_facts(attestation_object: &[u8]) -> Option<RegistrationFacts> {
    let value: ciborium::Value = ciborium::from_reader(attestation_object).ok()?;
    let auth_data = value.as_map()?.iter().find_map(|(key, value)| {
        (key.as_text() == Some("authData")).then(|| value.as_bytes()).flatten()
    })?;
    // rpIdHash (32) | flags (1) | signCount (4) | AAGUID (16) | ...
    let flags = *auth_data.get(32)?;
    let counter = u32::from_be_bytes(auth_data.get(33..37)?.try_into().ok()?);
    let aaguid = if flags & FLAG_ATTESTED_DATA != 0 {
        Uuid::from_slice(auth_data.get(37..53)?).ok()?
    } else {
        Uuid::nil()
    };
    Some(RegistrationFacts {
        aaguid,
        counter,
        backup_eligible: flags & FLAG_BACKUP_ELIGIBLE != 0,
        backup_state: flags & FLAG_BACKUP_STATE != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attestation_object(auth_data: Vec<u8>) -> Vec<u8> {
        let value = ciborium::Value::Map(vec![
            (ciborium::Value::Text("fmt".into()), ciborium::Value::Text("none".into())),
            (ciborium::Value::Text("attStmt".into()), ciborium::Value::Map(vec![])),
            (ciborium::Value::Text("authData".into()), ciborium::Value::Bytes(auth_data)),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&value, &mut out).unwrap();
        out
    }

    #[test]
    fn reads_flags_counter_and_aaguid() {
        let mut auth_data = vec![0u8; 32];
        auth_data.push(0x01 | 0x04 | FLAG_BACKUP_ELIGIBLE | FLAG_BACKUP_STATE | FLAG_ATTESTED_DATA);
        auth_data.extend_from_slice(&7u32.to_be_bytes());
        auth_data.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let facts = registration_facts(&attestation_object(auth_data)).unwrap();
        assert_eq!(facts.aaguid.to_string(), "01020304-0506-0708-0102-030405060708");
        assert_eq!(facts.counter, 7);
        assert!(facts.backup_eligible && facts.backup_state);
    }

    proptest::proptest! {
        /// Any bytes as an attestation object, or as the authenticator data
        /// inside one: an answer or None, never a panic.
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(0u8.., 0..400)) {
            let _ = registration_facts(&bytes);
            let _ = registration_facts(&attestation_object(bytes));
        }
    }

    #[test]
    fn refuses_truncated_or_foreign_input() {
        assert_eq!(registration_facts(b"not cbor"), None);
        assert_eq!(registration_facts(&attestation_object(vec![0u8; 20])), None);
    }
}
