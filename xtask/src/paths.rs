//! One rule for relative paths: what a person gives (a flag, a `HINDSIGHT_*` variable, an
//! argument) is taken from the directory the command was started in, as every other
//! command-line tool and shell completion take it; the defaults live in the repository
//! (`project_root()`), whatever that directory is. Paths are normalised before they are
//! used or printed, so no message shows `/repo/../../tmp/x`.

use std::{
    path::{Component, Path, PathBuf},
    sync::OnceLock,
};

/// The working directory at start: `main` moves the task's shell to the repository root,
/// after which the process's own working directory no longer says where the person was.
static INVOKED_IN: OnceLock<PathBuf> = OnceLock::new();

/// Records the directory the command was started in; `main` calls it before anything
/// changes directory. Later calls change nothing.
pub fn set_working_dir(dir: PathBuf) {
    let _ = INVOKED_IN.set(normalise(&dir));
}

/// The directory the command was started in (the process's current one when `main` did
/// not record it, as in unit tests).
pub fn working_dir() -> PathBuf {
    match INVOKED_IN.get() {
        Some(dir) => dir.clone(),
        // Unreadable (deleted under us): `/` at least keeps the paths absolute.
        None => normalise(&std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))),
    }
}

/// A path a person gave, absolute and normalised: taken from the working directory.
pub fn absolute(path: &Path) -> PathBuf {
    absolute_from(&working_dir(), path)
}

/// A default setting's path, absolute and normalised: taken from the repository root.
pub fn in_repository(path: &Path) -> PathBuf {
    absolute_from(&crate::project_root(), path)
}

/// `path` taken from `base` (unless absolute), normalised.
pub fn absolute_from(base: &Path, path: &Path) -> PathBuf {
    normalise(&base.join(path))
}

/// Removes `.` and resolves `..` lexically, as a person reads a path (`std::path::absolute`
/// keeps `..`). Symlinks are not followed: `a/link/..` becomes `a`, which is what the shell's
/// own `cd` does too. `..` above the root stays at the root.
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                // Only a normal component can be undone; at the root `..` is the root, and a
                // relative path keeps leading `..`s.
                match out.components().next_back() {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    Some(Component::RootDir | Component::Prefix(_)) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{absolute_from, normalise};

    #[test]
    fn normalise_removes_dots_without_touching_the_file_system() {
        let cases = [
            ("/repo/../../../tmp/x", "/tmp/x"),
            ("/repo/./a//b/../c/", "/repo/a/c"),
            ("/..", "/"),
            ("a/../../b", "../b"),
            ("./a/.", "a"),
            (".", "."),
            ("a/..", "."),
        ];
        for (given, expected) in cases {
            assert_eq!(normalise(Path::new(given)), PathBuf::from(expected), "{given}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_base_and_absolute_ones_kept() {
        let base = Path::new("/home/me/work");
        assert_eq!(absolute_from(base, Path::new("backups")), PathBuf::from("/home/me/work/backups"));
        assert_eq!(absolute_from(base, Path::new("../x.sql")), PathBuf::from("/home/me/x.sql"));
        assert_eq!(absolute_from(base, Path::new("/srv/./b/../c")), PathBuf::from("/srv/c"));
    }
}
