//! Logs and traces. Logs go to stderr (filter: `RUST_LOG`). When the standard OTLP
//! variables are set (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! with `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, …), spans are also exported over
//! OTLP/HTTP through tracing-opentelemetry.
//!
//! Every message hop is a span; its W3C `traceparent` travels in the envelope (and in
//! admin calls forwarded between nodes), so one request that crosses nodes is one trace.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// True once spans are exported: only then is a trace context worth carrying.
static EXPORTING: AtomicBool = AtomicBool::new(false);

const TRACEPARENT: &str = "traceparent";

/// Keeps the exporter alive; flushes it when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // The exporter's blocking HTTP client must not be dropped on a runtime thread.
            let _ = std::thread::spawn(move || p.shutdown()).join();
        }
    }
}

/// True when the environment asks for OTLP export.
pub fn otlp_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

fn provider(service: &str) -> Result<SdkTracerProvider, String> {
    // Built on a plain thread: the exporter's blocking HTTP client must not be made on a
    // runtime thread.
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    std::thread::spawn(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build())
    })
    .join()
    .map_err(|_| "the exporter set-up panicked".to_string())?
}

/// Installs the global subscriber: stderr logs, and OTLP export when asked for.
pub fn init(default_filter: &str, service: &str) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    crate::crypto::install_crypto_provider();
    let (otel, provider, problem) = if otlp_requested() {
        match provider(service) {
            Ok(p) => {
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(p.tracer("airssys"))
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
                (Some(layer), Some(p), None)
            }
            Err(e) => (None, None, Some(e)),
        }
    } else {
        (None, None, None)
    };
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(e) = problem {
        tracing::warn!("OTLP export requested but not set up: {e}");
    }
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting spans over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// The `traceparent` of the current span; empty when spans are not exported.
pub fn current_traceparent() -> String {
    traceparent_of(&tracing::Span::current())
}

pub fn traceparent_of(span: &tracing::Span) -> String {
    if !EXPORTING.load(Ordering::Relaxed) {
        return String::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the remote span named by `traceparent` (no-op when empty).
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() || !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The trace id (32 hex digits) inside a `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_read_from_a_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id(""), None);
        assert_eq!(trace_id("00-abc-01"), None);
    }

    #[test]
    fn without_export_no_context_travels() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent_of(&span), "");
        adopt(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
}
