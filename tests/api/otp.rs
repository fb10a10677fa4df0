//! RFC 6238 TOTP and RFC 4648 base32, written from the RFCs for the tests
//! and the benchmark: a second implementation, independent of the
//! server's library, to compute the codes a user's app would show.

use hmac::{Hmac, Mac};

/// The six-digit TOTP code (SHA-1, 30-second steps) at `unix_secs`.
pub fn totp_at(secret: &[u8], unix_secs: i64) -> String {
    let counter = (unix_secs / 30) as u64;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", value % 1_000_000)
}

/// RFC 4648 base32, padding optional.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|a| *a == c).expect("base32") as u32;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}
