//! A real SMTP server on loopback for the tests: it speaks enough of RFC
//! 5321 for lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no AUTH, no
//! STARTTLS) and keeps every message it accepts. One per test process;
//! tests tell their mail apart by recipient address.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};

pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
}

static MAILBOX: Mutex<Vec<Mail>> = Mutex::new(Vec::new());

/// The sink's port, starting it on first use.
pub fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve(stream);
                });
            }
        });
        port
    })
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => out.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?,
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
                    if lines.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // RFC 5321 §4.5.2: undo dot-stuffing.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                MAILBOX.lock().unwrap().push(Mail { to: std::mem::take(&mut to), data });
                out.write_all(b"250 queued\r\n")?
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"502 not implemented\r\n")?,
        }
    }
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
