//! The agent's commands besides the daemon, all run with the agent stopped
//! (the queue is RocksDB, which one process opens at a time):
//! - `dead-letters list|replay`: the batches every collector refused for
//!   good (see `forward`). `replay` moves them back among the batches to
//!   send, under the identity they had, so a batch a collector stored after
//!   all is still stored once.
//! - `check-state`: reads the whole queue with its checksums and every
//!   checkpoint, and exits non-zero on damage.
//! - `repair`: what the agent does at start on damage (`queue::recover`,
//!   lost lines read again from their files by `tail::FileRefill`), on its
//!   own.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::{Arg, ArgMatches, Command};

use crate::config::{Config, SyncPolicy, MIN_QUEUE_MEMORY};
use crate::queue::{DeadLetter, Queue, QueueError};
use crate::tail::checkpoint::{Checkpoint, FileId};
use crate::tail::FileRefill;

pub fn commands() -> Vec<Command> {
    vec![
        Command::new("dead-letters")
            .about("List or replay the batches every collector refused for good (stop the agent first)")
            .subcommand_required(true)
            .subcommand(Command::new("list").about("One line per batch: its first sequence number, records, bytes, when and why it was refused"))
            .subcommand(
                Command::new("replay")
                    .about("Move batches back to be sent at the agent's next start")
                    .arg(
                        Arg::new("first-seq")
                            .long("first-seq")
                            .value_name("SEQ")
                            .value_parser(clap::value_parser!(u64))
                            .help("Only the batch starting at this sequence number (default: all)"),
                    ),
            ),
        Command::new("check-state").about(
            "Read the whole queue and every checkpoint; exit non-zero if anything is damaged (stop the agent first)",
        ),
        Command::new("repair").about(
            "Quarantine a damaged queue and keep what survives, as the agent does at start (stop the agent first)",
        ),
    ]
}

pub async fn run(config: Config, name: &str, args: &ArgMatches) -> anyhow::Result<()> {
    let dir = config.data_dir.join("queue");
    if !dir.exists() {
        anyhow::bail!("no queue in {}: check data_dir", config.data_dir.display());
    }
    let (max_bytes, sync) = (
        config.queue.max_bytes,
        config.queue.sync == SyncPolicy::Always,
    );
    let (name, args) = (name.to_string(), args.clone());
    let refill = FileRefill::new(&config.sources);
    tokio::task::spawn_blocking(move || match name.as_str() {
        "dead-letters" => dead_letters(&*open(&dir, max_bytes, sync)?, &args),
        "check-state" => check_state(&dir, max_bytes, sync),
        "repair" => {
            let (_, recovery) =
                Queue::open_or_recover(&dir, max_bytes, sync, MIN_QUEUE_MEMORY, &refill)
                    .map_err(|e| in_use(e, &dir))?;
            match recovery {
                Some(r) => println!("recovered: {r}"),
                None => println!("{}: healthy, nothing to repair", dir.display()),
            }
            Ok(())
        }
        other => unreachable!("not a command of the agent: {other}"),
    })
    .await?
}

fn in_use(e: QueueError, dir: &Path) -> anyhow::Error {
    let locked = format!("{e:?}").contains("lock");
    anyhow::Error::new(e).context(if locked {
        format!(
            "the queue in {} is in use: stop the agent first",
            dir.display()
        )
    } else {
        format!("cannot open the queue in {}", dir.display())
    })
}

/// The queue, for a command run with the agent stopped: the least memory
/// serves.
fn open(dir: &Path, max_bytes: u64, sync: bool) -> anyhow::Result<Arc<Queue>> {
    Queue::open(dir, max_bytes, sync, MIN_QUEUE_MEMORY).map_err(|e| in_use(e, dir))
}

fn dead_letters(queue: &Queue, args: &ArgMatches) -> anyhow::Result<()> {
    match args.subcommand() {
        Some(("list", _)) => {
            let letters = queue
                .dead_letters()
                .context("cannot read the dead-letter area")?;
            print!("{}", table(&letters));
        }
        Some(("replay", sub)) => {
            let only = sub.get_one::<u64>("first-seq").copied();
            let moved = queue.replay(only).context("cannot replay")?;
            if let (Some(seq), true) = (only, moved.is_empty()) {
                anyhow::bail!("no dead letter starts at {seq}: see `dead-letters list`");
            }
            let records: u64 = moved.iter().map(|d| d.manifest.records).sum();
            println!(
                "{} batches ({records} records) will be sent at the agent's next start",
                moved.len()
            );
        }
        _ => unreachable!("clap requires a subcommand"),
    }
    Ok(())
}

/// `Queue::open` reads every key with its checksum; then every checkpoint
/// must decode.
fn check_state(dir: &Path, max_bytes: u64, sync: bool) -> anyhow::Result<()> {
    let queue = open(dir, max_bytes, sync).map_err(|e| {
        e.context("damaged: `logferry-agent repair`, or starting the agent, quarantines it and keeps what survives")
    })?;
    let (mut files, mut sources, mut bad) = (0, 0, Vec::new());
    for (k, v) in queue.checkpoints().context("cannot read the checkpoints")? {
        if k.starts_with(b"source/") {
            sources += 1;
        } else if FileId::from_key(&k).is_some() && Checkpoint::decode(&v).is_some() {
            files += 1;
        } else {
            bad.push(format!("{k:02x?}"));
        }
    }
    let depth = queue.depth();
    let dead = queue.dead_letter_totals();
    println!(
        "{}: agent id {}; {} records to deliver, {} bytes on disk; {} dead-letter batches ({} records); checkpoints of {files} files and {sources} sources",
        dir.display(),
        queue.agent_id(),
        depth.records,
        depth.bytes,
        dead.batches,
        dead.records
    );
    if !bad.is_empty() {
        anyhow::bail!("checkpoints that do not decode, at keys {}", bad.join(", "));
    }
    println!("healthy");
    Ok(())
}

fn table(letters: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<20} {:>8} {:>10}  {:<20}  REASON\n",
        "FIRST_SEQ", "RECORDS", "BYTES", "REFUSED_AT"
    );
    for d in letters {
        let at = chrono::DateTime::from_timestamp_millis(d.refused_unix_ms as i64)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {:>8} {:>10}  {:<20}  {}\n",
            d.manifest.first_seq, d.manifest.records, d.manifest.bytes, at, d.reason
        ));
    }
    let records: u64 = letters.iter().map(|d| d.manifest.records).sum();
    out.push_str(&format!(
        "{} batches, {records} records in the dead-letter area\n",
        letters.len()
    ));
    out
}
