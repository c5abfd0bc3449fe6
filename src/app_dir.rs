//! Where an embedding program's store lives by default: its own directory
//! under the user's cache directory, never one shared by every program.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::StoreOptions;

/// The store's directory inside the app's cache directory. A directory of
/// its own: a store root must be empty or a store, and the app may keep
/// other files in its cache directory.
const STORE_DIR: &str = "snapcache";

impl StoreOptions {
    /// Options for the store of the program `app`, at its default place:
    /// `<user cache dir>/<app>/snapcache`, where the user cache directory is
    ///
    /// - Linux and other Unix: `$XDG_CACHE_HOME` if it is set to an absolute
    ///   path (the XDG Base Directory spec says a relative one is to be
    ///   ignored), else `$HOME/.cache`;
    /// - macOS: `$HOME/Library/Caches`;
    /// - Windows: `%LOCALAPPDATA%`.
    ///
    /// So Kopi's store is `~/.cache/kopi/snapcache` on Linux. Each program
    /// gets its own store; none shares the snapcache CLI's default
    /// ([`StoreOptions::default_root`]). Fails with
    /// [`Error::InvalidOption`] when `app` is not a plain directory name
    /// (empty, `.`, `..`, or holding a path separator) or when no user cache
    /// directory is known (no absolute `HOME` / `LOCALAPPDATA`).
    ///
    /// ```
    /// # fn main() -> Result<(), snapcache::Error> {
    /// let options = snapcache::StoreOptions::for_app("kopi")?;
    /// assert!(options.root().ends_with("kopi/snapcache"));
    /// assert!(snapcache::StoreOptions::for_app("../kopi").is_err());
    /// # Ok(()) }
    /// ```
    pub fn for_app(app: &str) -> Result<StoreOptions> {
        let root = app_store_dir(app, |k| std::env::var_os(k))?;
        Ok(StoreOptions::new(root))
    }
}

fn app_store_dir(app: &str, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if app.is_empty()
        || app == "."
        || app == ".."
        || app.contains(['/', '\\', '\0'])
        || Path::new(app).is_absolute()
    {
        return Err(Error::InvalidOption(format!(
            "the app name {app:?} is not a plain directory name (it names the app's cache directory)"
        )));
    }
    let base = user_cache_dir(env).ok_or_else(|| {
        Error::InvalidOption(format!(
            "no user cache directory is known for {app:?} ({}); give the store's path explicitly",
            CACHE_DIR_SOURCES
        ))
    })?;
    Ok(base.join(app).join(STORE_DIR))
}

/// An environment value that is set, not empty and an absolute path.
fn absolute(env: &impl Fn(&str) -> Option<OsString>, key: &str) -> Option<PathBuf> {
    env(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

#[cfg(windows)]
const CACHE_DIR_SOURCES: &str = "LOCALAPPDATA is not set to an absolute path";
#[cfg(target_os = "macos")]
const CACHE_DIR_SOURCES: &str = "HOME is not set to an absolute path";
#[cfg(not(any(windows, target_os = "macos")))]
const CACHE_DIR_SOURCES: &str = "neither XDG_CACHE_HOME nor HOME is set to an absolute path";

/// The user's cache directory (see [`StoreOptions::for_app`]).
pub(crate) fn user_cache_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    #[cfg(windows)]
    {
        absolute(&env, "LOCALAPPDATA")
    }
    #[cfg(target_os = "macos")]
    {
        absolute(&env, "HOME").map(|h| h.join("Library").join("Caches"))
    }
    #[cfg(not(any(windows, target_os = "macos")))]
    {
        absolute(&env, "XDG_CACHE_HOME")
            .or_else(|| absolute(&env, "HOME").map(|h| h.join(".cache")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[cfg(not(any(windows, target_os = "macos")))]
    #[test]
    fn xdg_cache_home_when_absolute_else_home_cache() {
        let dir = |vars: &[(&str, &str)]| app_store_dir("kopi", env(vars));
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/xdg"), ("HOME", "/home/u")]).unwrap(),
            PathBuf::from("/xdg/kopi/snapcache")
        );
        // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "rel/cache"), ("HOME", "/home/u")]).unwrap(),
            PathBuf::from("/home/u/.cache/kopi/snapcache")
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", ""), ("HOME", "/home/u")]).unwrap(),
            PathBuf::from("/home/u/.cache/kopi/snapcache")
        );
        let err = dir(&[("HOME", "relative")]).unwrap_err();
        assert!(
            err.to_string().contains("give the store's path explicitly"),
            "{err}"
        );
        assert!(dir(&[]).is_err());
    }

    #[test]
    fn the_app_name_is_one_plain_directory_name() {
        let vars = [
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/h"),
            ("LOCALAPPDATA", "C:\\x"),
        ];
        for bad in ["", ".", "..", "a/b", "a\\b", "/abs", "nul\0"] {
            let err = app_store_dir(bad, env(&vars)).unwrap_err();
            assert!(
                err.to_string().contains("not a plain directory name"),
                "{bad:?}: {err}"
            );
        }
        assert!(app_store_dir("kopi.dev", env(&vars)).is_ok());
    }
}
