//! The outbox folder on disk: private to the service user (the folder
//! 0700, its files 0600: notifications at rest are readable by nobody
//! else), and a probe telling whether the disk takes writes again.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::store::OutboxError;

pub const FOLDER_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// The probe file, written and removed again to see whether the disk
/// takes writes (the folder holds nothing else but the outbox file).
const PROBE_NAME: &str = "outbox.probe";
/// How much the probe writes: more than a few notifications, so that a
/// disk with only crumbs left is not taken for one that has room.
const PROBE_BYTES: usize = 64 * 1024;

/// Creates the outbox folder 0700 (its parents as usual), or tightens an
/// existing one that others can read.
pub fn prepare_folder(dir: &Path) -> Result<(), OutboxError> {
    let io = |e| OutboxError::Io(dir.to_path_buf(), e);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match DirBuilder::new().mode(FOLDER_MODE).create(dir) {
        // The umask may have taken bits away; the mode is set as meant.
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(FOLDER_MODE)).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            tighten(dir, FOLDER_MODE, "folder");
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

/// Creates the outbox file 0600 if it is not there (redb would create it
/// with the umask's mode), or tightens an existing one.
pub fn prepare_file(path: &Path) -> Result<(), OutboxError> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    match created {
        Ok(_) => std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
            .map_err(|e| OutboxError::Io(path.to_path_buf(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tighten(path, FILE_MODE, "file");
            Ok(())
        }
        Err(e) => Err(OutboxError::Io(path.to_path_buf(), e)),
    }
}

/// Takes the group's and others' bits away from what an older version
/// (or an operator) left, with a warning. Not fatal when it fails: the
/// folder may be a volume root the service user does not own.
fn tighten(path: &Path, mode: u32, what: &str) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let found = meta.permissions().mode() & 0o777;
    if found & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, Permissions::from_mode(mode)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            found = format!("{found:04o}"),
            now = format!("{mode:04o}"),
            "the outbox {what} was readable by others; its permissions were tightened"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            found = format!("{found:04o}"),
            error = %e,
            "the outbox {what} is readable by others and cannot be tightened; make it {mode:04o}",
        ),
    }
}

/// Whether the disk under `dir` takes writes: writes `PROBE_BYTES` to a
/// file there, syncs it, and removes it again.
pub fn disk_takes_writes(dir: &Path) -> Result<(), std::io::Error> {
    let path: PathBuf = dir.join(PROBE_NAME);
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    // Whatever happened, the probe does not stay (it holds the space).
    let removed = std::fs::remove_file(&path);
    written?;
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
