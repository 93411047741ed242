//! The `section!` macro that `raw.rs` defines the file format with: from
//! one entry per key it makes the `Raw*` field serde reads, and, for a
//! *plain key* (one value with a default), also its `--flag` (with its
//! `--help` and `CORRAL_<FLAG>` variable), its resolved field, and the code
//! that picks the flag over the file over the default and checks the value,
//! pointing a problem at the file's line or the flag. Keys of another shape
//! (lists, tables, values that depend on other keys or the environment) are
//! written as plain fields and resolved by hand in `validate`.
//!
//! What one `section!` call makes, for `RawServer, ServerKeys, ServerFlags,
//! resolve_server_keys, "server"`:
//!
//! - `RawServer`: every entry as a field, in the order written (serde's
//!   "unknown key, expected one of ..." lists them in that order); a plain
//!   key's field is `Option<Spanned<T>>` and its doc ends with
//!   `Default <value>.`;
//! - `ServerKeys`: the plain keys resolved (their `=> Type`), which
//!   `ServerConfig` holds and derefs to, so `cfg.server.keepalive` works;
//! - `ServerFlags`: the plain keys' flags, flattened into
//!   [`super::Overrides`];
//! - `Resolver::resolve_server_keys(&flags, &raw) -> ServerKeys`;
//! - `SERVER_KEYS`: each plain key's name, default and flag, for the tests
//!   that hold `config/example.toml` and the `--help` texts against them.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{ByteSize, HumanDuration};

/// Defines one section of the file format; see the module doc and the top
/// of `raw.rs` for the entry syntax.
macro_rules! section {
    (
        $(#[doc = $section_doc:literal])*
        $raw:ident, $keys:ident, $flags:ident, $resolve:ident, $table:ident, $section:literal {
            $(
                $(#[doc = $doc:literal])*
                $name:ident : $ty:ty
                $(
                    = $default:literal => $resolved:ty
                    $(, flag $flag:literal $(short $short:literal)? $(alias $alias:literal)* : $help:literal)?
                    $(, check $check:expr)?
                )?
                ;
            )*
        }
    ) => {
        $(#[doc = $section_doc])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub(super) struct $raw {
            $(
                $(#[doc = $doc])*
                $(#[doc = concat!("Default ", stringify!($default), ".")])?
                pub(super) $name: $crate::config::keys::raw_type!($ty $(, $default)?),
            )*
        }

        #[doc = concat!("The plain keys of `[", $section, "]`, resolved (see `raw.rs`).")]
        #[derive(Debug, Clone)]
        pub struct $keys {
            $($(
                #[doc = concat!("`", $section, ".", stringify!($name), "`, default ", stringify!($default), ".")]
                pub $name: $resolved,
            )?)*
        }

        #[doc = concat!("The flags of the plain keys of `[", $section, "]`.")]
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $flags {
            $($($(
                #[arg(
                    long = $flag,
                    $(short = $short,)?
                    $(alias = $alias,)*
                    value_name = <$ty as $crate::config::keys::FlagValue>::VALUE_NAME,
                    value_parser = <$ty as $crate::config::keys::FlagValue>::parse_flag,
                    env = $crate::config::keys::env_of!($flag),
                    help = concat!(
                        $help, " [toml: ", $section, ".", stringify!($name),
                        "] [default: ", $default, "]"
                    ),
                )]
                pub $name: Option<$ty>,
            )?)?)*
        }

        /// Each plain key: "section.key", its default as written in
        /// `config/example.toml`, and its flag.
        #[cfg(test)]
        pub(super) const $table: &[$crate::config::keys::KeyInfo] = &[
            $($(
                $crate::config::keys::KeyInfo {
                    key: concat!($section, ".", stringify!($name)),
                    default: stringify!($default),
                    flag: $crate::config::keys::flag_name!($($flag)?),
                    default_parses: $crate::config::keys::parses::<$ty>,
                },
            )?)*
        ];

        impl super::validate::Resolver<'_> {
            /// The plain keys: the flag's value, else the file's, else the
            /// default; each checked.
            pub(super) fn $resolve(&mut self, _flags: &$flags, _raw: &$raw) -> $keys {
                $keys {
                    $($(
                        $name: {
                            let (value, _at) = self.pick(
                                $crate::config::keys::flag_value!(_flags.$name $(, $flag)?),
                                (_raw.$name.as_ref(), concat!($section, ".", stringify!($name))),
                                $crate::config::keys::default_of::<$ty>(stringify!($default)),
                            );
                            $(
                                if let Err(message) = ($check)(&value, stringify!($default)) {
                                    self.fail(&_at, message);
                                }
                            )?
                            <$ty as $crate::config::keys::Resolve<$resolved>>::resolve(value)
                        },
                    )?)*
                }
            }
        }
    };
}
pub(super) use section;

/// The field type of an entry: `Option<Spanned<T>>` for a plain key (one
/// with a default), the type as written for any other.
macro_rules! raw_type {
    ($ty:ty) => { $ty };
    ($ty:ty, $default:literal) => { Option<toml::Spanned<$ty>> };
}
pub(super) use raw_type;

/// `(flags.name.as_ref(), "--name")` for a key with a flag, `(None, "")`
/// for one without.
macro_rules! flag_value {
    ($($field:ident).+) => { (None, "") };
    ($($field:ident).+, $flag:literal) => { ($($field).+.as_ref(), concat!("--", $flag)) };
}
pub(super) use flag_value;

/// `Some("--name")` or `None`.
#[cfg(test)]
macro_rules! flag_name {
    () => {
        None
    };
    ($flag:literal) => {
        Some(concat!("--", $flag))
    };
}
#[cfg(test)]
pub(super) use flag_name;

/// "CORRAL_MAX_QUEUED" for "max-queued", at compile time (the same as
/// [`super::env_name`] at run time).
macro_rules! env_of {
    ($flag:literal) => {{
        const BYTES: [u8; $flag.len() + 7] = $crate::config::keys::env_bytes($flag);
        const NAME: &str = match std::str::from_utf8(&BYTES) {
            Ok(name) => name,
            Err(_) => panic!("a flag is ASCII"),
        };
        NAME
    }};
}
pub(super) use env_of;

/// The bytes of "CORRAL_" + `flag` in upper case with '-' as '_'.
pub(super) const fn env_bytes<const N: usize>(flag: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let prefix = b"CORRAL_";
    let mut i = 0;
    while i < prefix.len() {
        out[i] = prefix[i];
        i += 1;
    }
    let flag = flag.as_bytes();
    let mut j = 0;
    while j < flag.len() && prefix.len() + j < N {
        out[prefix.len() + j] = match flag[j] {
            b'-' => b'_',
            c => c.to_ascii_uppercase(),
        };
        j += 1;
    }
    out
}

/// A plain key, for the tests of `config/example.toml` and `--help`.
#[cfg(test)]
pub(super) struct KeyInfo {
    /// "server.keepalive".
    pub(super) key: &'static str,
    /// As `config/example.toml` writes it: `"5s"`, `2048`, `false`.
    pub(super) default: &'static str,
    /// "--keepalive".
    pub(super) flag: Option<&'static str>,
    /// Whether `default` reads as the key's type.
    pub(super) default_parses: fn(&str) -> bool,
}

/// Whether `text` (a TOML value) reads as a `T`.
#[cfg(test)]
pub(super) fn parses<T: DeserializeOwned>(text: &str) -> bool {
    value_of::<T>(text).is_some()
}

/// The TOML value `text` (a default as the example writes it) as a `T`.
fn value_of<T: DeserializeOwned>(text: &str) -> Option<T> {
    #[derive(serde::Deserialize)]
    struct One<T> {
        v: T,
    }
    toml::from_str::<One<T>>(&format!("v = {text}"))
        .ok()
        .map(|one| one.v)
}

/// A plain key's default, read from its TOML text like the file's value.
/// Every default reads (`example_tests` checks), so the fallback is never
/// taken.
pub(super) fn default_of<T: DeserializeOwned + Default>(text: &str) -> T {
    value_of(text).unwrap_or_default()
}

/// A type a flag takes: how it is parsed and named in `--help`.
pub(super) trait FlagValue: Sized {
    const VALUE_NAME: &'static str;
    fn parse_flag(text: &str) -> Result<Self, String>;
}

impl FlagValue for HumanDuration {
    const VALUE_NAME: &'static str = "DURATION";
    fn parse_flag(text: &str) -> Result<Self, String> {
        super::parse_duration(text)
    }
}

impl FlagValue for ByteSize {
    const VALUE_NAME: &'static str = "SIZE";
    fn parse_flag(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

macro_rules! number_flags {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            const VALUE_NAME: &'static str = "N";
            fn parse_flag(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e| format!("{e}"))
            }
        }
    )*};
}
number_flags!(u32, u64, usize);

/// A raw value into its resolved form (`=> Type` in an entry).
pub(super) trait Resolve<T> {
    fn resolve(self) -> T;
}

impl<T> Resolve<T> for T {
    fn resolve(self) -> T {
        self
    }
}

impl Resolve<Duration> for HumanDuration {
    fn resolve(self) -> Duration {
        self.0
    }
}

impl Resolve<u64> for ByteSize {
    fn resolve(self) -> u64 {
        self.0
    }
}

impl Resolve<usize> for ByteSize {
    fn resolve(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

// The checks an entry names (`check NAME`): each takes the value and the
// default as written (for "like ..." in the message) and says what is wrong.

/// A duration that must not be 0.
pub(super) fn longer_than_0(value: &HumanDuration, like: &str) -> Result<(), String> {
    match value.0.is_zero() {
        true => Err(format!("must be longer than 0s, like {like}")),
        false => Ok(()),
    }
}

/// A number that must not be 0.
pub(super) fn at_least_1<T: PartialEq + Default>(value: &T, like: &str) -> Result<(), String> {
    match *value == T::default() {
        true => Err(format!("must be at least 1, like {like}")),
        false => Ok(()),
    }
}

/// A count of `what` that must not be 0; the message says what it counts.
pub(super) fn count_of<T: PartialEq + Default>(
    what: &'static str,
) -> impl Fn(&T, &str) -> Result<(), String> {
    move |value, like| match *value == T::default() {
        // "like 1" says nothing when 1 is the least.
        true if like == "1" => Err(format!("must be at least 1 (it is the number of {what})")),
        true => Err(format!(
            "must be at least 1 (it is the number of {what}), like {like}"
        )),
        false => Ok(()),
    }
}

/// The smallest `server.max_header_bytes`: hyper refuses (panics on) a
/// smaller read buffer.
pub(super) fn header_bytes(value: &ByteSize, like: &str) -> Result<(), String> {
    match value.0 < 8 * 1024 {
        true => Err(format!("must be at least \"8KiB\", like {like}")),
        false => Ok(()),
    }
}
