//! Log output: logfmt (the default, like Prometheus) or JSON lines, at a
//! level chosen on the command line.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `logfmt` or `json`.
pub fn init(level: &str, format: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log.level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().flatten_event(true).init(),
        "logfmt" => builder.event_format(Logfmt).init(),
        other => anyhow::bail!("invalid --log.format {other:?}: expected logfmt or json"),
    }
    Ok(())
}

struct Logfmt;

struct Fields<'a>(&'a mut String);

fn quote_if_needed(v: &str) -> String {
    if v.is_empty() || v.contains([' ', '"', '=', '\n', '\t']) {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        self.0
            .push_str(&format!(" {name}={}", quote_if_needed(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut line = format!(
            "ts={ts} level={} target={}",
            meta.level().as_str().to_lowercase(),
            meta.target()
        );
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{line}")
    }
}
