//! The job secret on disk: `secret_file = "PATH"` in the cluster config, written by
//! `netstorm keygen` (64 hex digits and a newline, mode 0600).
//!
//! A secret file is refused — naming the file, never showing its content — if it is missing
//! or unreadable, readable by group or others (`mode & 0o077 != 0`), or shorter than
//! [`MIN_SECRET_LEN`] bytes. Its content is hex (as `keygen` writes it; whitespace around it
//! ignored) or, if it is not hex, the raw bytes.

use netstorm_dataplane::protect::{JobSecret, MIN_SECRET_LEN};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a secret file was refused (the message names the file; the secret is never shown).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret file {path} is readable by group or others (mode {mode:04o}): run chmod 600 {path}"
    )]
    Exposed { path: String, mode: u32 },
    #[error("secret file {path} holds {len} bytes of secret, at least {MIN_SECRET_LEN} are needed (netstorm keygen --out {path} --force writes a new one)")]
    Short { path: String, len: usize },
}

/// Reads and checks the secret file at `path`.
pub fn read_secret_file(path: &Path) -> Result<JobSecret, SecretError> {
    let name = path.display().to_string();
    let read = |source| SecretError::Read {
        path: name.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed { path: name, mode });
    }
    let raw = std::fs::read(path).map_err(read)?;
    let bytes = decode_hex(raw.trim_ascii()).unwrap_or(raw);
    JobSecret::new(&bytes).map_err(|e| SecretError::Short {
        path: name,
        len: e.0,
    })
}

/// Decodes an even number of hex digits; `None` if `text` is not that.
pub fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.chunks_exact(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// Lower-case hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `secret` hex-encoded to a new file at `path` with mode 0600 (refusing an existing
/// file unless `force`; a forced overwrite also resets the mode to 0600).
pub fn write_secret_file(path: &Path, secret: &[u8], force: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(format!("{}\n", encode_hex(secret)).as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back_and_bad_ones_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("netstorm-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.key");
        let _ = std::fs::remove_file(&path);
        write_secret_file(&path, &[0xAB; 32], false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let s = read_secret_file(&path).unwrap();
        assert_eq!(s, JobSecret::new(&[0xAB; 32]).unwrap());
        // No overwrite without force.
        assert!(write_secret_file(&path, &[1; 32], false).is_err());
        write_secret_file(&path, &[1; 32], true).unwrap();
        assert_eq!(
            read_secret_file(&path).unwrap(),
            JobSecret::new(&[1; 32]).unwrap()
        );
        // World-readable.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&path).unwrap_err().to_string();
        assert!(e.contains("job.key") && e.contains("0644"), "{e}");
        assert!(!e.contains("0101"), "{e}");
        // Short.
        std::fs::write(&path, "abcd\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_secret_file(&path).unwrap_err().to_string();
        assert!(e.contains("job.key") && e.contains("holds 2 bytes"), "{e}");
        // Missing.
        let e = read_secret_file(&dir.join("nope.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.key"), "{e}");
        // Raw (non-hex) bytes are taken as they are.
        std::fs::write(&path, [0xFFu8; 40]).unwrap();
        assert_eq!(
            read_secret_file(&path).unwrap(),
            JobSecret::new(&[0xFF; 40]).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
