//! One process per data directory. Two pipelines on the same folder would each hand the incidents the
//! other left open to their own router and each deliver the other's outbox rows in flight: every notice
//! twice. The process that runs the pipeline holds an exclusive `flock` on `DATA_DIR/lock` for its
//! lifetime (the kernel drops it when the process dies, however it dies) and writes its PID there, so a
//! second one fails at once with a message naming the folder and the holder. The alert commands
//! (`alerts list`, `silence add`, …) do not take it: they work in SQLite transactions beside a running
//! process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// Held while the process uses the data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data directory {dir} is in use by another streetwatch process{holder} (lock {lock}); \
         stop it, or give this one another data directory (runtime.data_dir)"
    )]
    Held {
        dir: String,
        lock: String,
        /// " (pid N)" when the holder wrote its PID.
        holder: String,
    },
    #[error("locking data directory {dir} ({lock}): {source}")]
    Io {
        dir: String,
        lock: String,
        #[source]
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) without waiting.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join("lock");
        let io = |source| LockError::Io {
            dir: dir.display().to_string(),
            lock: path.display().to_string(),
            source,
        };
        // Not truncated on open: a process that finds the lock held reads the holder's PID from it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text
                    .trim()
                    .parse::<u32>()
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    lock: path.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid_and_the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(&first.path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file: a second open in the same process conflicts too.
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("(pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
