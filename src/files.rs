//! Reading the files a configuration names: the configuration itself, secret
//! files (`secret_file`, `bearer_file`, ...), the wg-quick files of
//! `monitor.names_from` and the simulated backend's scenario.
//!
//! Every one of them goes through [`read_bounded`], so a path that points at
//! `/dev/zero`, a FIFO nobody writes to, a socket or a file of gigabytes is
//! refused with a clear reason instead of hanging or exhausting memory.
//!
//! Invariants:
//! - Only regular files are read. The file is opened non-blocking (opening a
//!   FIFO never waits for a writer) and its type is taken from the opened
//!   descriptor, so a file swapped between a check and the read cannot slip
//!   through.
//! - At most `limit` bytes are ever read, whatever size the file claims
//!   (`/proc` files claim 0, a file may grow while it is read).

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Largest secret file: a secret is one line; 64 KiB is far above any token.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;
/// Largest configuration file (the tree is capped at 100,000 nodes anyway).
pub const MAX_CONFIG_FILE: u64 = 16 << 20;
/// Largest wg-quick file of `monitor.names_from` (100,000 peers fit).
pub const MAX_NAMES_FILE: u64 = 32 << 20;
/// Largest scenario file of the simulated backend.
pub const MAX_SCENARIO_FILE: u64 = 16 << 20;

/// Why a file was not read. The `Display` form completes "cannot read FILE: ".
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed (missing, permission denied, ...).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A directory, FIFO, socket or device: never read.
    #[error("not a regular file ({0}); give the path of a file")]
    NotRegular(&'static str),
    /// More than the limit of its kind.
    #[error("larger than {} (the limit for this kind of file)", Size(*.limit))]
    TooLarge { limit: u64 },
    /// Not UTF-8 text (only from [`read_bounded_text`]).
    #[error("not a UTF-8 text file")]
    NotUtf8,
}

/// A byte count as `64 KiB`, `16 MiB`.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// What kind of non-regular file `file_type` is, for messages.
fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Reads the regular file at `path`, at most `limit` bytes of it.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(out)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_regular_file_within_the_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap(), b"0123456789");
        assert_eq!(read_bounded_text(&path, 100).unwrap(), "0123456789");
        let err = read_bounded(&path, 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            "larger than 9 bytes (the limit for this kind of file)"
        );
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        for (path, what) in [
            (PathBuf::from("/dev/zero"), "a character device"),
            (dir.path().to_path_buf(), "a directory"),
            (fifo, "a FIFO"),
        ] {
            // In a thread with a deadline: a regression hangs on the FIFO.
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || tx.send(read_bounded(&p, MAX_SECRET_FILE).map(|_| ())));
            let err = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("read_bounded blocked")
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("not a regular file ({what}); give the path of a file"),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn a_huge_sparse_file_is_refused_by_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(64 << 30).unwrap();
        let err = read_bounded(&path, MAX_NAMES_FILE).unwrap_err();
        assert_eq!(
            err.to_string(),
            "larger than 32 MiB (the limit for this kind of file)"
        );
        assert!(matches!(
            read_bounded_text(Path::new("/nonexistent/x"), 1),
            Err(ReadError::Io(_))
        ));
    }
}
