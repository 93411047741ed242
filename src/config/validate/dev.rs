//! `[dev]`: `--reload` and the globs of what it watches.

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
        }
    }

    /// The flag's globs (when given), else the file's, else `default`;
    /// each must compile.
    fn globs(
        &mut self,
        flag: &[String],
        flag_name: &str,
        file: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
        default: &[&str],
    ) -> Vec<String> {
        let given: Vec<(String, At)> = if !flag.is_empty() {
            flag.iter()
                .map(|g| (g.clone(), self.flag(flag_name)))
                .collect()
        } else if let Some(list) = file {
            list.get_ref()
                .iter()
                .map(|g| (g.get_ref().clone(), self.in_file(g.span(), key)))
                .collect()
        } else {
            return default.iter().map(|g| (*g).to_owned()).collect();
        };
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
