//! `[hooks]`: the commands run on life-cycle events.

use toml::Spanned;

use crate::config::HooksConfig;
use crate::config::raw::{RawHooks, StringOrArray};

use super::*;

/// The command in the messages about `[hooks]`.
const EXAMPLE: &str = "[\"./hooks/worker-exit.sh\"]";

impl Resolver<'_> {
    pub(in crate::config) fn hooks(&mut self, raw: &RawHooks) -> HooksConfig {
        HooksConfig {
            on_worker_exit: self.hook(raw.on_worker_exit.as_ref(), "hooks.on_worker_exit"),
            on_ready: self.hook(raw.on_ready.as_ref(), "hooks.on_ready"),
            on_reload_failed: self.hook(raw.on_reload_failed.as_ref(), "hooks.on_reload_failed"),
        }
    }

    /// One hook: an array of strings, checked like `deploy.rollback_hook`.
    fn hook(&mut self, value: Option<&Spanned<StringOrArray>>, key: &str) -> Option<Vec<String>> {
        let value = value?;
        let at = self.in_file(value.span(), key);
        match value.get_ref() {
            StringOrArray::String(text) => {
                let message = format!(
                    "is a string: write the command as an array of strings (the program, then \
                     its arguments; no shell runs it), like {}",
                    as_array(text, EXAMPLE)
                );
                self.fail(&at, message);
                None
            }
            StringOrArray::Array(words) => self.file_command(words, &at, EXAMPLE),
        }
    }
}
