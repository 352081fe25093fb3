//! Container logs: stdout and stderr piped through the agent into a file per container, rotated
//! at a size cap (one previous file, `<name>.log.1`, is kept), so a chatty container cannot fill
//! the state directory.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::io::{AsyncRead, AsyncReadExt};

/// A log file that starts over (keeping one previous file) when it would grow past `max` bytes.
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    file: std::fs::File,
    size: u64,
}

impl RotatingLog {
    pub fn open(path: &Path, max: u64) -> std::io::Result<RotatingLog> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            max,
            file,
            size,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.max {
            let mut previous = self.path.clone().into_os_string();
            previous.push(".1");
            std::fs::rename(&self.path, &previous)?;
            *self = RotatingLog::open(&self.path, self.max)?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// Copies a stream into the shared log until it ends.
pub async fn copy(mut from: impl AsyncRead + Unpin, log: Arc<Mutex<RotatingLog>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let written = crate::lock(&log).write(&buf[..n]);
                if let Err(e) = written {
                    tracing::warn!(error = %e, "cannot write a container log");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotates_at_its_cap_and_keeps_one_previous_file() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("capstan-localnode-logs-{}", std::process::id()));
        let path = dir.join("c.log");
        let mut log = RotatingLog::open(&path, 1000)?;
        for _ in 0..35 {
            log.write(&[b'x'; 100])?;
        }
        let current = std::fs::metadata(&path)?.len();
        let previous = std::fs::metadata(dir.join("c.log.1"))?.len();
        eprintln!("after 3500 bytes with a 1000-byte cap: current {current}, previous {previous}");
        assert!(current <= 1000 && previous <= 1000);
        assert_eq!(current, 500, "3500 = 3 full files of 1000 and 500");
        assert_eq!(std::fs::read_dir(&dir)?.count(), 2, "only one previous file is kept");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
