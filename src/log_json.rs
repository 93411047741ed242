//! `--log-format json`: one JSON object per record, its message and its
//! level at the top, where log platforms look for them:
//!
//! ```json
//! {"timestamp":"2026-12-08T01:21:17.030997Z","level":"ERROR","severity":"ERROR","message":"worker 0 (pid 27029) failed to boot: ..."}
//! {"timestamp":"...","level":"INFO","severity":"INFO","message":"GET /a?b=1 200","fields":{"method":"GET","status":200,...}}
//! ```
//!
//! - `message` is what Cloud Logging, Datadog, Loki and Elastic show as
//!   the record's text;
//! - `level` is tracing's (`ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`), and
//!   `severity` the same in Cloud Logging's names (`WARNING` for `WARN`,
//!   `DEBUG` for both `DEBUG` and `TRACE`), which Cloud Run and GKE take
//!   as the entry's severity: without it every record was `DEFAULT`, and
//!   an alert on errors saw none;
//! - the record's other fields (an access record's `method`, `status`,
//!   ...) stay under `fields`, so that none of them can take the place of
//!   a platform's own attribute (Datadog reads a top-level `status` as the
//!   record's level).

use std::fmt::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime as _;

/// The formatter of `--log-format json`.
pub struct JsonRecord;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonRecord
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let level = *event.metadata().level();
        let mut fields = Fields::default();
        event.record(&mut fields);
        // In this order (a map would sort the keys): the time first, for
        // a person reading the lines.
        write!(
            writer,
            "{{\"timestamp\":{},\"level\":\"{}\",\"severity\":\"{}\",\"message\":{}",
            json(&timestamp),
            level.as_str(),
            severity(level),
            json(&fields.message),
        )?;
        if !fields.others.is_empty() {
            write!(writer, ",\"fields\":{}", json(&fields.others))?;
        }
        writeln!(writer, "}}")
    }
}

/// `v` as JSON text (a string or a map of JSON values, which always
/// serialize).
fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// A level in Cloud Logging's names (`LogSeverity`).
fn severity(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => "WARNING",
        tracing::Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// A record's message and its other fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    others: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.others.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.put(field, value.into());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            // A format string's arguments: their Debug is their text.
            let _ = write!(self.message, "{value:?}");
        } else {
            self.put(field, format!("{value:?}").into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and the infinities have no JSON number: null.
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    /// What `JsonRecord` writes for the records `log` makes, one object
    /// per line.
    fn records(log: impl FnOnce()) -> Vec<Value> {
        #[derive(Clone, Default)]
        struct Out(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Out {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Out::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .event_format(JsonRecord)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn message_level_and_severity_are_at_the_top_and_other_fields_under_fields() {
        let got = records(|| {
            tracing::error!("worker {} failed:\nTraceback \"x\"", 0);
            tracing::warn!("slow");
            tracing::trace!("deep");
            let none: Option<u32> = None;
            tracing::info!(
                status = 200u16,
                method = "GET",
                duration_ms = 1.5,
                worker_pid = none,
                keep = true,
                "GET / 200"
            );
        });
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0]["level"], "ERROR");
        assert_eq!(got[0]["severity"], "ERROR");
        assert_eq!(got[0]["message"], "worker 0 failed:\nTraceback \"x\"");
        assert!(got[0].get("fields").is_none(), "{}", got[0]);
        assert!(got[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            (&got[1]["level"], &got[1]["severity"]),
            (&"WARN".into(), &"WARNING".into())
        );
        assert_eq!(
            (&got[2]["level"], &got[2]["severity"]),
            (&"TRACE".into(), &"DEBUG".into())
        );
        let f = &got[3]["fields"];
        assert_eq!(got[3]["message"], "GET / 200");
        assert_eq!(
            (&f["status"], &f["method"], &f["duration_ms"]),
            (&200.into(), &"GET".into(), &1.5.into())
        );
        assert_eq!(f["keep"], true);
        // A field with no value (None) is left out.
        assert!(f.get("worker_pid").is_none(), "{f}");
        assert!(got[3].get("status").is_none());
    }
}
