//! `mcshm-clean [--dir DIR] [--dry-run] PREFIX`: lists or removes the
//! shared-memory objects named `PREFIX.<pid>.<starttime>.<random>` whose
//! creator is dead (see `mooncake_shm::cleanup` for the exact rule).
//!
//! Exit status: 0 on success (also when nothing was stale), 1 if the
//! directory could not be scanned or an object could not be removed, 2 for
//! a usage error.

use mooncake_shm::cleanup;
use std::process::ExitCode;

const USAGE: &str = "usage: mcshm-clean [--dir DIR] [--dry-run] PREFIX\n\
\n\
Removes shared-memory objects named PREFIX.<pid>.<starttime>.<random> whose\n\
creator process is dead and whose lock no live owner holds.\n\
  --dir DIR   scan DIR instead of /dev/shm (directory-mode pools)\n\
  --dry-run   only list what would be removed";

fn main() -> ExitCode {
    let mut dir: Option<String> = None;
    let mut dry_run = false;
    let mut prefix: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => match args.next() {
                Some(d) => dir = Some(d),
                None => return usage("--dir needs a value"),
            },
            "--dry-run" | "-n" => dry_run = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            _ if prefix.is_some() => return usage("only one PREFIX"),
            _ => prefix = Some(a),
        }
    }
    let Some(prefix) = prefix else {
        return usage("PREFIX is required");
    };
    let where_ = dir.as_deref().unwrap_or("/dev/shm");
    let mut failures = 0usize;
    let result = if dry_run {
        cleanup::for_each_stale(&prefix, dir.as_deref(), |name| {
            println!("stale {where_}/{name} (dry run, not removed)");
        })
    } else {
        cleanup::remove_stale_each(&prefix, dir.as_deref(), |name, r| match r {
            Ok(()) => println!("removed {where_}/{name}"),
            Err(mooncake_shm::Error::NotFound) => {
                println!("gone {where_}/{name} (removed by someone else)")
            }
            Err(e) => {
                failures += 1;
                eprintln!("mcshm-clean: cannot remove {where_}/{name}: {e}");
            }
        })
    };
    match result {
        Ok(n) if dry_run => {
            println!("{n} stale object(s) with prefix {prefix:?} in {where_}");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            println!("removed {n} stale object(s) with prefix {prefix:?} from {where_}");
            if failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mcshm-clean: cannot scan {where_}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("mcshm-clean: {msg}\n{USAGE}");
    ExitCode::from(2)
}
