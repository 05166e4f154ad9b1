//! The ceiling for the heartbeat benchmark: an axum server whose `POST /heartbeat` reads the
//! body and answers the same envelope without doing anything. `server/bench/heartbeat.sh` drives
//! it with the same load as the real server and prints the ratio.

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8090);
    let app = Router::new().route(
        "/heartbeat",
        post(|_body: Bytes| async {
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                r#"{"success":true,"message":"Heartbeat Posted Successfully.","results":""}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
