//! Where streetwatch finds the files it ships with: model manifests and weights, pipeline templates, demo
//! and benchmark footage, the ONNX Runtime library. Never from the working directory (a stray `models/`
//! or `.deps/` there would be loaded as code) and never from the build machine's source folder; in order:
//!
//! 1. `STREETWATCH_HOME`, when set: an install prefix or a source checkout;
//! 2. the executable's own location: `<prefix>/bin/streetwatch` beside `<prefix>/share/streetwatch`
//!    (`make install`), or a development build in `<checkout>/target/…`, whose checkout is the parent of
//!    the nearest `target` folder holding `Cargo.toml`.
//!
//! An install prefix has `share/streetwatch/{models,pipelines,fixtures}` and
//! `lib/streetwatch/libonnxruntime.so.*`; a checkout has `{models,pipelines,fixtures}` and the library in
//! `.deps/onnxruntime/` (scripts/setup.sh). Paths written in a configuration file resolve against the
//! file's folder ([`crate::config::Config::resolve`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime library's file name (the version `ort` was built against).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

#[derive(Debug, Clone, PartialEq)]
pub struct Home {
    /// Holds `models/`, `pipelines/` and `fixtures/`.
    pub share: PathBuf,
    /// The ONNX Runtime shared library.
    pub onnxruntime: PathBuf,
}

impl Home {
    /// The install layout under `prefix`, whether or not it is there.
    fn install(prefix: &Path) -> Home {
        Home {
            share: prefix.join("share/streetwatch"),
            onnxruntime: prefix.join("lib/streetwatch").join(ORT_LIBRARY),
        }
    }

    /// The layout rooted at `root`: an install prefix or a source checkout.
    pub fn at(root: &Path) -> Option<Home> {
        let installed = Home::install(root);
        if installed.share.join("models").is_dir() {
            return Some(installed);
        }
        (root.join("Cargo.toml").is_file() && root.join("models").is_dir()).then(|| Home {
            share: root.to_path_buf(),
            onnxruntime: root.join(".deps/onnxruntime").join(ORT_LIBRARY),
        })
    }

    /// The layout an executable at `exe` belongs to.
    pub fn of_executable(exe: &Path) -> Option<Home> {
        let dir = exe.parent()?;
        let prefix = dir
            .parent()
            .filter(|_| dir.file_name() == Some("bin".as_ref()));
        prefix.and_then(Home::at).or_else(|| {
            exe.ancestors()
                .filter(|d| d.file_name() == Some("target".as_ref()))
                .find_map(|target| target.parent().and_then(Home::at))
        })
    }

    /// `STREETWATCH_HOME`, else the executable's layout; on failure, why, with the install layout the
    /// executable would have (so that a missing file is reported where it was looked for).
    pub fn find() -> Result<Home, (Home, String)> {
        if let Some(root) = std::env::var_os("STREETWATCH_HOME") {
            let root = std::path::absolute(&root).unwrap_or_else(|_| root.into());
            return Home::at(&root).ok_or_else(|| {
                let why = format!(
                    "STREETWATCH_HOME={} holds neither share/streetwatch/models (an install prefix) nor \
                     Cargo.toml and models/ (a source checkout)",
                    root.display()
                );
                (Home::install(&root), why)
            });
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/streetwatch"));
        Home::of_executable(&exe).ok_or_else(|| {
            let prefix = exe
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("/"));
            let why = format!(
                "{} has no share/streetwatch beside it and is not in a source checkout's target/: \
                 install it with `make install`, or set STREETWATCH_HOME",
                exe.display()
            );
            (Home::install(prefix), why)
        })
    }
}

/// This process's [`Home`], found once; when it cannot be found, says why once and uses the install
/// layout beside the executable.
pub fn home() -> &'static Home {
    static HOME: OnceLock<Home> = OnceLock::new();
    HOME.get_or_init(|| {
        Home::find().unwrap_or_else(|(guess, why)| {
            tracing::warn!("shipped files not found: {why}");
            guess
        })
    })
}

/// A file or folder shipped with streetwatch, by its path in the source tree (`models/…`, `pipelines`,
/// `fixtures/…`).
pub fn installed(rel: &str) -> PathBuf {
    home().share.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary folder holding empty `files`.
    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        dir
    }

    #[test]
    fn an_install_prefix_is_found_from_its_bin_folder() {
        let prefix = tree(&["bin/streetwatch", "share/streetwatch/models/m.toml"]);
        let p = prefix.path();
        let home = Home::of_executable(&p.join("bin/streetwatch")).unwrap();
        assert_eq!(home.share, p.join("share/streetwatch"));
        assert_eq!(
            home.onnxruntime,
            p.join("lib/streetwatch/libonnxruntime.so.1.31.1")
        );
        // A bin folder without the share folder beside it is nobody's install.
        std::fs::remove_dir_all(p.join("share")).unwrap();
        assert_eq!(Home::of_executable(&p.join("bin/streetwatch")), None);
    }

    #[test]
    fn a_development_build_finds_its_checkout_above_target() {
        let checkout = tree(&["Cargo.toml", "models/m.toml"]);
        let c = checkout.path();
        for exe in [
            "target/debug/streetwatch",
            "target/release/deps/tracking-0123abcd",
            "target/x86_64-unknown-linux-gnu/release/streetwatch",
        ] {
            let home = Home::of_executable(&c.join(exe)).unwrap();
            assert_eq!(home.share, c, "{exe}");
            assert_eq!(
                home.onnxruntime,
                c.join(".deps/onnxruntime/libonnxruntime.so.1.31.1")
            );
        }
        // Outside target/, a checkout's files are not the executable's.
        assert_eq!(Home::of_executable(&c.join("streetwatch")), None);
        assert_eq!(Home::of_executable(&c.join("elsewhere/streetwatch")), None);
    }
}
