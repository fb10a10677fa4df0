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

/// Every message delivered to `address` so far, oldest first.
pub fn mails_to(address: &str) -> Vec<String> {
    MAILBOX
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.to.iter().any(|t| t == address))
        .map(|m| m.data.clone())
        .collect()
}

/// The six-digit code in the newest message to `address`.
pub fn last_code_to(address: &str) -> String {
    let mails = mails_to(address);
    let mail = mails.last().unwrap_or_else(|| panic!("no mail to {address}"));
    let after = mail.split(" is ").nth(1).expect("a code in the message");
    let code: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    assert_eq!(code.len(), 6, "a six-digit code in: {mail}");
    code
}
