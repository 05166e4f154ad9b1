//! OpenTelemetry traces: a real `medic-server` process with `OTEL_EXPORTER_OTLP_ENDPOINT` set
//! exports its spans over OTLP/HTTP (protobuf) to a local receiver — HTTP requests with their
//! request id, heartbeat batches, monitor passes and notification deliveries; without the
//! variable it builds no exporter.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use tokio::time::Instant;

use crate::support::ADMIN_KEY;
use crate::support_recorder::{Answer, Recorder};

/// A `medic-server` process on a fresh SQLite database, killed when dropped.
struct Server {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let log = dir.path().join("server.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_medic-server"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", "sqlite://medic.db")
            .env("MEDIC_BIND", format!("127.0.0.1:{port}"))
            .env("MEDIC_ADMIN_API_KEY", ADMIN_KEY)
            .env("MEDIC_LOG_FORMAT", "text")
            .env("MEDIC_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        Self {
            child: cmd.spawn().expect("medic-server starts"),
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_live(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited ({status}):\n{}", self.log());
            }
            let r = client
                .get(format!("{}/health/live", self.base))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "never live:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A span as received: its name and string attributes.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    attributes: BTreeMap<String, String>,
    service: String,
}

/// Every span the receiver has been sent so far.
fn received(otlp: &Recorder) -> Vec<Span> {
    let mut spans = Vec::new();
    for r in otlp.requests() {
        assert_eq!(r.path, "/v1/traces", "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        let export = ExportTraceServiceRequest::decode(r.body.clone()).expect("OTLP protobuf");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .filter_map(|a| {
                            let v = match a.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => s.clone(),
                                AnyValue::IntValue(i) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            Some((a.key.clone(), v))
                        })
                        .collect();
                    spans.push(Span {
                        name: span.name,
                        attributes,
                        service: service.clone(),
                    });
                }
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_requests_batches_passes_and_deliveries_reach_an_otlp_receiver() {
    let otlp = Recorder::start().await;
    otlp.answer(Answer::status(200));
    let hook = Recorder::start().await;
    let endpoint = otlp.url("");
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "medic-it"),
        // Export every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true"),
    ]);
    let client = reqwest::Client::new();
    server.wait_live(&client).await;
    assert!(
        server.log().contains("exporting OpenTelemetry traces"),
        "{}",
        server.log()
    );

    // A request with a known id; a heartbeat (one batch); a silent service with a webhook,
    // so the monitor opens an alert and the dispatcher delivers it.
    let r = client
        .post(format!("{}/v2/services", server.base))
        .bearer_auth(ADMIN_KEY)
        .header("x-request-id", "otel-it-request-1")
        .json(&json!({"heartbeat_name": "otel-silent", "interval_seconds": 1}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 201);
    let service: serde_json::Value = r.json().await.expect("json");
    let service_id = service["results"]["service_id"].as_i64().expect("id");
    let r = client
        .post(format!("{}/v2/services/{service_id}/targets", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"kind": "webhook", "config": {"url": hook.url("/hook"), "secret": "0123456789abcdef"}}))
        .send()
        .await
        .expect("target");
    assert_eq!(r.status().as_u16(), 201);
    let r = client
        .post(format!("{}/heartbeat", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"heartbeat_name": "otel-silent", "status": "UP"}))
        .send()
        .await
        .expect("heartbeat");
    assert!(r.status().is_success(), "{}", r.status());

    let wanted = [
        "request",
        "heartbeat_batch",
        "monitor_pass",
        "notification_delivery",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans = received(&otlp);
        if wanted.iter().all(|w| spans.iter().any(|s| s.name == *w)) {
            break spans;
        }
        let names: std::collections::BTreeSet<_> = spans.iter().map(|s| s.name.clone()).collect();
        assert!(
            Instant::now() < deadline,
            "spans received: {names:?}; hook requests: {}\n{}",
            hook.requests().len(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(spans.iter().all(|s| s.service == "medic-it"), "{spans:?}");
    let created = spans
        .iter()
        .find(|s| {
            s.name == "request"
                && s.attributes.get("request_id").map(String::as_str) == Some("otel-it-request-1")
        })
        .unwrap_or_else(|| panic!("no span of the request with its id: {spans:#?}"));
    assert_eq!(created.attributes["route"], "/v2/services");
    assert_eq!(created.attributes["method"], "POST");
    let batch = spans
        .iter()
        .find(|s| s.name == "heartbeat_batch")
        .expect("batch");
    assert!(batch.attributes["size"].parse::<u64>().expect("size") >= 1);
    let delivery = spans
        .iter()
        .find(|s| s.name == "notification_delivery")
        .expect("delivery");
    assert_eq!(delivery.attributes["channel"], "webhook");
    assert!(!hook.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_no_exporter_is_built() {
    let mut server = Server::start(&[("OTEL_SERVICE_NAME", "medic-it")]);
    let client = reqwest::Client::new();
    server.wait_live(&client).await;
    let r = client
        .get(format!("{}/health/live", server.base))
        .send()
        .await
        .expect("live");
    assert!(r.status().is_success());
    assert!(!server.log().contains("OpenTelemetry"), "{}", server.log());
}
