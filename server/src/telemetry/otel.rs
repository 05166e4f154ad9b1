//! Optional OpenTelemetry traces.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the server's
//! `tracing` spans are exported over OTLP/HTTP with protobuf bodies: `request` (every HTTP
//! request; attributes `method`, `route`, `request_id`), `heartbeat_batch` (one write of
//! queued heartbeats; `size`), `monitor_pass` (one pass of the monitor) and
//! `notification_delivery` (one attempt to deliver an alert; `channel`). Unset, nothing is built:
//! no exporter, no layer, no thread, and the spans cost what they cost the log alone.
//!
//! The exporter reads the standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, the `_TRACES_` variants, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`); `OTEL_SDK_DISABLED=true`
//! turns it off. Requests go through the `reqwest` client the server already has (rustls; no
//! gRPC stack), run on the server's Tokio runtime from the batch processor's own thread.

use std::sync::Arc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// The variables that turn exporting on: either endpoint.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// Whether the environment asks for traces: an endpoint is set and the SDK is not disabled.
pub fn requested(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && ENDPOINT_VARIABLES.iter().any(|v| set(v))
}

/// The exporter's state: flushed and stopped by [`Traces::shutdown`]. Empty when traces are off.
#[derive(Default)]
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Exports what is still queued and stops the exporter (call before the runtime ends).
    pub async fn shutdown(self) {
        if let Some(provider) = self.0 {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "could not flush the last traces");
            }
        }
    }
}

/// The layer that exports spans, when the environment asks for it (see [`requested`]).
/// Must be called inside the Tokio runtime that will carry the exports.
pub fn layer<S>() -> (
    Option<OpenTelemetryLayer<S, SdkTracer>>,
    Traces,
    Option<String>,
)
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if !requested(|name| std::env::var(name).ok()) {
        return (None, Traces::default(), None);
    }
    match provider() {
        Ok(provider) => {
            let tracer = provider.tracer("medic-server");
            let layer = tracing_opentelemetry::layer().with_tracer(tracer);
            (Some(layer), Traces(Some(provider)), None)
        }
        Err(e) => (None, Traces::default(), Some(e)),
    }
}

fn provider() -> Result<SdkTracerProvider, String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "traces need the server's runtime".to_owned())?;
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("could not build the HTTP client for traces: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(OnRuntime {
            client,
            runtime: Arc::new(runtime),
        })
        .build()
        .map_err(|e| format!("the OTLP trace exporter could not be set up: {e}"))?;
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` win over the default name.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty());
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name("medic-server");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The server's `reqwest` client as the exporter's HTTP client. The batch processor calls it
/// from its own thread, outside any runtime, so each request is spawned on the server's runtime.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: Arc<tokio::runtime::Handle>,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut out = Response::builder().status(response.status());
            if let Some(headers) = out.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        });
        task.await.map_err(|e| Box::new(e) as HttpError)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_endpoint_turns_traces_on() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!requested(env(&[])));
        assert!(!requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(!requested(env(&[("OTEL_SERVICE_NAME", "medic")])));
        assert!(requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )])));
        assert!(requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces"
        )])));
        assert!(!requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
    }
}
