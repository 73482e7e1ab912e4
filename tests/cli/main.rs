//! SPEC 2: the `callgate` binary itself. Help and version, exit codes,
//! `check`, `certs`, `send` against an in-process gateway, and `run` as a
//! real process that becomes ready, serves, and stops on a signal.

#[path = "../support/mod.rs"]
mod support;

mod certs;
mod check;
mod run;
mod send;
mod usage;

use std::path::{Path, PathBuf};

/// The token of `SIGNED_APP` in these tests.
const TOKEN: &str = "cli-test-token";

/// Writes `text` to `dir/name`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
