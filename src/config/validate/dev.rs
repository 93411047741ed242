//! `[dev]`: `--reload`, the folders it watches and the globs of what
//! counts.

use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::config::raw::RawDev;
use crate::config::{DevConfig, Overrides, RELOAD_EXCLUDE, RELOAD_INCLUDE};

use super::*;

impl Resolver<'_> {
    pub(in crate::config) fn dev(&mut self, args: &Overrides, raw: &RawDev) -> DevConfig {
        let reload = args.reload || raw.reload.as_ref().is_some_and(|r| *r.get_ref());
        DevConfig {
            reload,
            include: self.globs(
                &args.reload_include,
                "--reload-include",
                raw.reload_include.as_ref(),
                "dev.reload_include",
                RELOAD_INCLUDE,
            ),
            exclude: self.globs(
                &args.reload_exclude,
                "--reload-exclude",
                raw.reload_exclude.as_ref(),
                "dev.reload_exclude",
                RELOAD_EXCLUDE,
            ),
            dirs: self.dev_paths(
                (&args.reload_dirs, "--reload-dir"),
                (raw.reload_dirs.as_ref(), "dev.reload_dirs"),
                Path::is_dir,
                "a folder that exists",
            ),
            extra_files: self.dev_paths(
                (&args.reload_extra_files, "--reload-extra-file"),
                (raw.reload_extra_files.as_ref(), "dev.reload_extra_files"),
                |p| p.parent().is_some_and(Path::is_dir),
                "a file in a folder that exists",
            ),
        }
    }

    /// The flag's paths (relative to the current folder) when given, else
    /// the file's (relative to its folder); each must pass `ok`, else a
    /// problem asking for `what`.
    fn dev_paths(
        &mut self,
        (flag, flag_name): (&[PathBuf], &str),
        (file, key): (Option<&Spanned<Vec<Spanned<String>>>>, &str),
        ok: fn(&Path) -> bool,
        what: &str,
    ) -> Vec<PathBuf> {
        let given: Vec<(PathBuf, At)> = match (flag, file) {
            ([], Some(list)) => list
                .get_ref()
                .iter()
                .filter_map(|p| {
                    let at = self.in_file(p.span(), key);
                    self.file_path(p, key).map(|path| (path, at))
                })
                .collect(),
            _ => flag
                .iter()
                .map(|p| (absolute(self.cwd, p), self.flag(flag_name)))
                .collect(),
        };
        let mut out = Vec::new();
        for (path, at) in given {
            if ok(&path) {
                out.push(path);
            } else {
                let base = at.relative_base();
                self.fail(
                    &at,
                    format!(
                        "{} is not {what}: give one (a relative path is read from {base})",
                        path.display()
                    ),
                );
            }
        }
        out
    }

    /// The file's globs, else `default`, and the flag's (uvicorn adds its
    /// --reload-include to *.py); each must compile.
    fn globs(
        &mut self,
        flag: &[String],
        flag_name: &str,
        file: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
        default: &[&str],
    ) -> Vec<String> {
        let mut given: Vec<(String, At)> = match file {
            Some(list) => list
                .get_ref()
                .iter()
                .map(|g| (g.get_ref().clone(), self.in_file(g.span(), key)))
                .collect(),
            None => default
                .iter()
                .map(|g| ((*g).to_owned(), self.flag(flag_name)))
                .collect(),
        };
        for g in flag {
            if !given.iter().any(|(known, _)| known == g) {
                given.push((g.clone(), self.flag(flag_name)));
            }
        }
        let mut out = Vec::new();
        for (glob, at) in given {
            match globset::Glob::new(&glob) {
                Ok(_) => out.push(glob),
                Err(e) => self.fail(
                    &at,
                    format!(
                        "\"{}\" is not a glob: {}; write one like \"*.py\" or \"templates/**\"",
                        glob.escape_default(),
                        e.kind()
                    ),
                ),
            }
        }
        out
    }
}
