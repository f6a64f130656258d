//! Files only their owner may read: the database, its WAL and shared-memory files, and
//! the key file hold patient data or secrets, so each is 0600 whatever the umask.

use std::path::Path;

use anyhow::Context;

/// Creates a new file (failing if it exists), mode 0600 from the start: never a moment
/// in which another user could open it.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes an existing file readable and writable by its owner only, if it is not already
/// (a database made by an earlier version, under a looser umask), and says so in the log.
pub fn restrict(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private (0600)", path.display()))?;
            tracing::warn!(file = %path.display(), "others could read this file: made it 0600");
        }
    }
    Ok(())
}

/// Syncs the directory holding `path`, so that a new file's name survives a power cut as
/// well as its contents. Best effort: not every file system can sync a directory.
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
}
