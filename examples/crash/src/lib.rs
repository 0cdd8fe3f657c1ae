//! The `crash` example component: misbehaves on command, for the host's fault tests.
//!
//! Commands (UTF-8 text, surrounding whitespace ignored):
//! - `trap`: panics, which traps the instance;
//! - `write-then-trap`: writes storage key `poison`, then traps (the write must be
//!   rolled back);
//! - `get`: replies the stored `poison` value, or `none`;
//! - `spin`: loops forever (until the host's deadline interrupts it);
//! - `oom`: allocates and touches 1 MiB blocks without bound (until the host's
//!   memory cap stops it);
//! - `fail`: returns `Err("failed on purpose")`;
//! - `hog KEY KIB`: stores `KIB` KiB under `KEY` and replies `stored`, or replies the
//!   storage error's name (`quota-exceeded`, `value-too-large`, `key-too-large`);
//! - `snoop`: tries to read the environment, the file system and the command line,
//!   and replies what it could see (the host grants none of them);
//! - anything else: replies `ok`.
//!
//! Its `migrate` refuses every upgrade to it, after writing storage key `migrated` (the
//! write must not be applied): a failed migration must leave the previous code running
//! with its state untouched. Except when the storage holds `let-me-in` (any value), so a
//! test can also upgrade to it.

use std::sync::Mutex;

use airssys_sdk::prelude::*;

/// Storage key written by `write-then-trap`.
const POISON: &str = "poison";

/// Memory grabbed by `oom`; a static so the allocations can never be elided.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A component that traps, spins, recurses without end, exhausts memory or fails on request.
struct Crash;

impl Component for Crash {
    fn migrate(previous: PreviousVersion) -> Result<(), String> {
        storage::set("migrated", previous.digest.as_bytes())?;
        if storage::get("let-me-in").is_some() {
            return Ok(());
        }
        Err(format!(
            "crash does not take over the state of {}",
            &previous.digest[..12.min(previous.digest.len())]
        ))
    }

    fn handle_message(msg: Message) -> HandlerResult {
        let text = msg.text();
        match text.trim() {
            "trap" => panic!("crash: trap requested"),
            "write-then-trap" => {
                storage::set(POISON, "written-before-trap")?;
                panic!("crash: trap requested after a storage write")
            }
            "get" => Ok(Some(
                storage::get(POISON).unwrap_or_else(|| b"none".to_vec()),
            )),
            "spin" => spin(),
            "recurse" => Ok(Some(recurse(u64::MAX).to_string().into_bytes())),
            "oom" => oom(),
            "fail" => Err("failed on purpose".to_string()),
            "snoop" => Ok(Some(snoop().into_bytes())),
            other => match other.strip_prefix("hog ") {
                Some(args) => hog(args),
                None => match other.strip_prefix("chatter ") {
                    Some(lines) => chatter(lines),
                    None => Ok(Some(b"ok".to_vec())),
                },
            },
        }
    }
}

/// `hog KEY KIB`: one value of `KIB` KiB under `KEY`.
fn hog(args: &str) -> HandlerResult {
    let mut words = args.split_whitespace();
    let (Some(key), Some(kib), None) = (words.next(), words.next(), words.next()) else {
        return Err("usage: hog KEY KIB".to_string());
    };
    let kib: usize = kib
        .parse()
        .map_err(|_| format!("invalid size (want KiB as a decimal number): {kib}"))?;
    let reply = match storage::set(key, vec![0x5Au8; kib * 1024]) {
        Ok(()) => "stored".to_string(),
        Err(e) => e.name().to_string(),
    };
    Ok(Some(reply.into_bytes()))
}

/// What the sandbox lets a component see of the machine: environment variables,
/// files, the command line.
fn snoop() -> String {
    let env = std::env::vars().count();
    let args = std::env::args().count();
    let root = match std::fs::read_dir("/") {
        Ok(entries) => format!("{} entries", entries.count()),
        Err(_) => "denied".to_string(),
    };
    let passwd = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("{} bytes", bytes.len()),
        Err(_) => "denied".to_string(),
    };
    format!("env={env} args={args} root={root} passwd={passwd}")
}

/// Loops forever; `black_box` keeps the loop from being optimized away.
fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

/// `chatter N`: N lines on stdout in one handler (a component that logs in a loop).
fn chatter(lines: &str) -> HandlerResult {
    let n: u64 = lines
        .trim()
        .parse()
        .map_err(|_| "usage: chatter N".to_string())?;
    for i in 0..n {
        println!("chatter line {i}");
    }
    Ok(Some(n.to_string().into_bytes()))
}

/// Recursion with no end in sight: every frame lives on the native wasm stack (no locals
/// in linear memory), so this exhausts the host's call stack limit.
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == 0 {
        return 0;
    }
    std::hint::black_box(recurse(depth - 1)).wrapping_add(1)
}

/// Allocates 1 MiB blocks, writes every page of each, and keeps them all, until the
/// allocator fails (which aborts, i.e. traps).
fn oom() -> ! {
    const BLOCK: usize = 1 << 20;
    let mut hoard = match HOARD.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    loop {
        let block = vec![0xA5u8; BLOCK];
        hoard.push(std::hint::black_box(block));
    }
}

airssys_sdk::export_component!(Crash);
