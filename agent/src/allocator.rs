//! How the agent uses glibc's allocator.
//!
//! By default glibc keeps a heap per thread (up to eight per core), and
//! raises its mmap threshold to the size of every large buffer freed, so
//! later buffers of that size come from a heap, where what is freed stays
//! resident. The agent's batches, reads and pushes are such buffers: under
//! load its resident memory grew to about twice what it held. glibc reads
//! its tunables only when a program starts, so a program that finds them
//! unset runs itself again with them. The collector, with many more
//! threads, keeps glibc's defaults: one heap for all of them cost it half
//! as much CPU again.

use std::os::unix::process::CommandExt;

/// One heap, and buffers of 256 KiB or more mapped on their own, returned
/// to the system when freed, as is free memory at the top of the heap.
/// (With 1 MiB, pushes of almost 1 MiB left the agent 10 MiB more.)
const TUNABLES: &str =
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=262144:glibc.malloc.trim_threshold=262144";

/// Replaces this process by the same program with the same arguments and
/// `GLIBC_TUNABLES` set to `TUNABLES`, unless it is set already (by the
/// first run, or by the user, whose settings win). Call it first, before
/// any thread starts. If the program cannot be run again, it goes on with
/// glibc's defaults and says so.
pub fn tune() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return untuned(&e),
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only when it failed.
    let e = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", TUNABLES)
        .exec();
    untuned(&e);
}

fn untuned(e: &std::io::Error) {
    eprintln!(
        "cannot run again with the allocator's settings ({e}); running with glibc's defaults, \
         which hold more memory (set GLIBC_TUNABLES={TUNABLES} to avoid this)"
    );
}
