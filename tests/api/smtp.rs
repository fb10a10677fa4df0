//! A real SMTP server on loopback for the tests: it speaks enough of RFC
//! 5321 for lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, and STARTTLS
//! per RFC 3207; no AUTH) and keeps every message it accepts. One per test
//! process; tests tell their mail apart by recipient address. A second
//! port speaks implicit TLS (RFC 8314). Its certificate, for 127.0.0.1, is
//! made at start and trusted by nothing but `ca_file()`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use native_tls::{Identity, TlsAcceptor};

pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

static MAILBOX: Mutex<Vec<Mail>> = Mutex::new(Vec::new());

/// The sink's port (plain, STARTTLS offered), starting it on first use.
pub fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| listen(false))
}

/// The sink's port for implicit TLS.
pub fn tls_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| listen(true))
}

/// A PEM file with the sink's certificate, to trust it by.
pub fn ca_file() -> PathBuf {
    certificate().1.clone()
}

fn listen(implicit_tls: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream, implicit_tls);
            });
        }
    });
    port
}

/// The TLS acceptor and the certificate's PEM file: a self-signed P-256
/// certificate for 127.0.0.1, valid for a day.
fn certificate() -> &'static (TlsAcceptor, PathBuf) {
    use openssl::{asn1, bn, ec, hash, nid, pkey, x509};
    static MADE: OnceLock<(TlsAcceptor, PathBuf)> = OnceLock::new();
    MADE.get_or_init(|| {
        let group = ec::EcGroup::from_curve_name(nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "sink.test").unwrap();
        let name = name.build();
        let mut cert = x509::X509Builder::new().unwrap();
        cert.set_version(2).unwrap();
        let serial = bn::BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        cert.set_serial_number(&serial).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
        cert.set_not_after(&asn1::Asn1Time::days_from_now(1).unwrap()).unwrap();
        let san = x509::extension::SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .build(&cert.x509v3_context(None, None))
            .unwrap();
        cert.append_extension(san).unwrap();
        cert.sign(&key, hash::MessageDigest::sha256()).unwrap();
        let pem = cert.build().to_pem().unwrap();
        let path =
            std::env::temp_dir().join(format!("passgate-smtp-sink-{}.pem", std::process::id()));
        std::fs::write(&path, &pem).unwrap();
        let identity =
            Identity::from_pkcs8(&pem, &key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (TlsAcceptor::new(identity).unwrap(), path)
    })
}

fn serve(stream: TcpStream, implicit_tls: bool) -> std::io::Result<()> {
    let acceptor = &certificate().0;
    const BANNER: &[u8] = b"220 sink.test ESMTP\r\n";
    if implicit_tls {
        let mut tls = acceptor.accept(stream).map_err(std::io::Error::other)?;
        tls.write_all(BANNER)?;
        return converse(&mut BufReader::new(tls), true).map(drop);
    }
    let mut plain = BufReader::new(stream);
    plain.get_mut().write_all(BANNER)?;
    // After STARTTLS the client greets again, with no banner (RFC 3207).
    if converse(&mut plain, false)? == Ended::StartTls {
        let tls = acceptor.accept(plain.into_inner()).map_err(std::io::Error::other)?;
        converse(&mut BufReader::new(tls), true)?;
    }
    Ok(())
}

#[derive(PartialEq)]
enum Ended {
    Closed,
    StartTls,
}

/// One SMTP conversation, over TLS or not yet (then STARTTLS is offered).
fn converse<S: Read + Write>(conn: &mut BufReader<S>, tls: bool) -> std::io::Result<Ended> {
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Ok(Ended::Closed);
        }
        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let out = conn.get_mut();
        match verb.as_str() {
            "EHLO" if tls => out.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?,
            "EHLO" => out.write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")?,
            "STARTTLS" if !tls => {
                out.write_all(b"220 go ahead\r\n")?;
                return Ok(Ended::StartTls);
            }
            "HELO" | "NOOP" => out.write_all(b"250 OK\r\n")?,
            "MAIL" | "RSET" => {
                to.clear();
                out.write_all(b"250 OK\r\n")?
            }
            "RCPT" => {
                let address = line.split(['<', '>']).nth(1).unwrap_or("").to_owned();
                to.push(address);
                out.write_all(b"250 OK\r\n")?
            }
            "DATA" => {
                out.write_all(b"354 end with .\r\n")?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if conn.read_line(&mut line)? == 0 {
                        return Ok(Ended::Closed);
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // RFC 5321 §4.5.2: undo dot-stuffing.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                MAILBOX.lock().unwrap().push(Mail { to: std::mem::take(&mut to), data, tls });
                conn.get_mut().write_all(b"250 queued\r\n")?
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(Ended::Closed);
            }
            _ => out.write_all(b"502 not implemented\r\n")?,
        }
    }
}

/// Whether every message to `address` so far came over TLS (None: none came).
pub fn all_over_tls(address: &str) -> Option<bool> {
    let mailbox = MAILBOX.lock().unwrap();
    let mails: Vec<_> = mailbox.iter().filter(|m| m.to.iter().any(|t| t == address)).collect();
    (!mails.is_empty()).then(|| mails.iter().all(|m| m.tls))
}

/// Every message delivered to `address` so far, oldest first, with its
/// body decoded (the mailer quotes long lines).
pub fn mails_to(address: &str) -> Vec<String> {
    MAILBOX
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.to.iter().any(|t| t == address))
        .map(|m| decoded(&m.data))
        .collect()
}

/// The message with a quoted-printable or base64 body decoded.
fn decoded(data: &str) -> String {
    let Some((head, body)) = data.split_once("\r\n\r\n") else {
        return data.to_owned();
    };
    let head_lower = head.to_ascii_lowercase();
    let body = if head_lower.contains("content-transfer-encoding: quoted-printable") {
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'=', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    } else if head_lower.contains("content-transfer-encoding: base64") {
        use base64::Engine;
        let compact: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD.decode(compact).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        body.to_owned()
    };
    format!("{head}\r\n\r\n{body}")
}

/// The six-digit code in the newest message to `address` that has one
/// (notices of changes carry none).
pub fn last_code_to(address: &str) -> String {
    let mails = mails_to(address);
    assert!(!mails.is_empty(), "no mail to {address}");
    let code_in = |mail: &String| {
        mail.split(" is ").skip(1).find_map(|after| {
            let code: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
            (code.len() == 6).then_some(code)
        })
    };
    mails.iter().rev().find_map(code_in).unwrap_or_else(|| panic!("no code in mail to {address}"))
}

/// Waits (up to 5 s: notices go out in the background) for a message to
/// `address` containing `needle`; returns it.
pub async fn wait_for_mail(address: &str, needle: &str) -> String {
    for _ in 0..100 {
        if let Some(mail) = mails_to(address).into_iter().rev().find(|m| m.contains(needle)) {
            return mail;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no mail to {address} containing {needle:?}: {:?}", mails_to(address));
}
