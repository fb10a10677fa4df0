//! The time of one argon2id hash for each of OWASP's five equivalent
//! argon2id configurations (Password Storage Cheat Sheet), hashed as the
//! server hashes: one lane, memory kept between hashes. Run it pinned to
//! one core, as the server would be:
//!
//! ```sh
//! taskset -c 0 cargo run --release --example argon2_cost
//! ```

use std::time::Instant;

use argon2::{Algorithm, Argon2, Block, Params, Version};

/// (memory in KiB, passes), each with one lane.
const OWASP: [(u32, u32); 5] = [(47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)];

fn main() {
    let rounds: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(40);
    println!("| memory KiB | passes | ms per hash | hashes/s |");
    println!("|---|---|---|---|");
    for (memory_kib, passes) in OWASP {
        let params = Params::new(memory_kib, passes, 1, Some(32)).expect("OWASP parameters");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut memory = vec![Block::default(); memory_kib as usize];
        let mut output = [0u8; 32];
        let mut hash = |n: u32| {
            argon2
                .hash_password_into_with_memory(
                    format!("correct horse {n}").as_bytes(),
                    b"a sixteen b salt",
                    &mut output,
                    &mut memory,
                )
                .expect("hash");
        };
        // The first hash faults the memory in; the server keeps it.
        hash(0);
        let started = Instant::now();
        for n in 0..rounds {
            hash(n);
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
        println!("| {memory_kib} | {passes} | {ms:.2} | {:.1} |", 1000.0 / ms);
    }
}
