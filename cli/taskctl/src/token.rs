//! The token `taskctl login` saves: readable by its owner only. The file is created with
//! mode 0600 (its directory 0700); a token file found readable by others is tightened to
//! 0600, with a warning on stderr, since the token is as good as a password until it
//! expires.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::{Class, fail};

pub fn path() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(base.join("taskmesh").join("token"))
}

pub fn save(path: &Path, token: &str) -> anyhow::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // The mode applies only when the file is created; an older file is fixed below.
        open.mode(0o600);
    }
    #[cfg(not(unix))]
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = open
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Truncated and still empty: made private before the token is written.
    tighten(path)?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<String> {
    let token = match std::fs::read_to_string(path) {
        Ok(token) => token,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                Class::Auth,
                format!(
                    "no token: run `taskctl login --user NAME` (looked in {})",
                    path.display()
                ),
            ));
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    tighten(path)?;
    Ok(token.trim().to_owned())
}

/// Makes an existing token file 0600 if group or others may read it, and says so.
#[cfg(unix)]
fn tighten(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // not there yet
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
        eprintln!(
            "warning: {} was readable by others (mode {mode:04o}); set to 0600",
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_token_file_is_private_and_an_open_one_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taskmesh").join("token");
        save(&path, "t1").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load(&path).unwrap(), "t1");
        assert_eq!(mode(&path), 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        save(&path, "t2").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load(&path).unwrap(), "t2");
    }

    #[test]
    fn a_missing_token_is_an_auth_failure() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("token")).unwrap_err();
        assert_eq!(crate::exit::classify(&err), Class::Auth);
    }
}
