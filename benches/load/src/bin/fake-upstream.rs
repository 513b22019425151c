//! A fast fake Google upstream for the load benchmark: a ~2 KB `generateContent` answer with
//! `usageMetadata`, a 50-event SSE stream, and a 2 MB Imagen-like body, all prepared once at
//! start so the upstream is never the bottleneck. A stream request with `slow=N` in its query
//! gets N small events 500 ms apart instead (the memory benchmark holds 1,000 of them open).
//! Usage: `fake-upstream ADDR`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, Uri};
use axum::response::Response;

struct Bodies {
    json: Bytes,
    sse: Bytes,
    imagen: Bytes,
}

fn bodies() -> Bodies {
    let text = "The sky appears blue because air molecules scatter the short blue wavelengths of sunlight more than the long red ones. ".repeat(13);
    let json = format!(
        "{{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{text}\"}}], \"role\": \"model\"}}, \"finishReason\": \"STOP\", \"index\": 0}}], \"usageMetadata\": {{\"promptTokenCount\": 5, \"candidatesTokenCount\": 380, \"totalTokenCount\": 420, \"thoughtsTokenCount\": 35, \"promptTokensDetails\": [{{\"modality\": \"TEXT\", \"tokenCount\": 5}}]}}, \"modelVersion\": \"gemini-2.5-flash\", \"responseId\": \"bench-0001\"}}"
    );
    let mut sse = String::new();
    for i in 0..50 {
        sse.push_str(&format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"chunk {i} of a streamed answer about the sky\"}}],\"role\": \"model\"}},\"index\": 0}}],\"usageMetadata\": {{\"promptTokenCount\": 5,\"candidatesTokenCount\": {},\"totalTokenCount\": {}}},\"modelVersion\": \"gemini-2.5-flash\"}}\r\n\r\n",
            10 * (i + 1),
            5 + 10 * (i + 1)
        ));
    }
    let b64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ".repeat(2 * 1024 * 1024 / 44 / 4);
    let preds: Vec<String> = (0..4)
        .map(|_| format!("{{\"bytesBase64Encoded\": \"{b64}\", \"mimeType\": \"image/png\"}}"))
        .collect();
    let imagen = format!("{{\"predictions\": [{}]}}", preds.join(", "));
    Bodies {
        json: Bytes::from(json),
        sse: Bytes::from(sse),
        imagen: Bytes::from(imagen),
    }
}

/// `slow=N` from the query: that many events, 500 ms apart.
fn slow_events(uri: &Uri) -> Option<u32> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("slow="))
        .and_then(|n| n.parse().ok())
}

fn slow_stream(n: u32) -> Response {
    let events = futures_util::stream::unfold(0u32, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let event = format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"slow chunk {i}\"}}],\"role\": \"model\"}},\"index\": 0}}],\"usageMetadata\": {{\"promptTokenCount\": 5,\"candidatesTokenCount\": {},\"totalTokenCount\": {}}},\"modelVersion\": \"gemini-2.5-flash\"}}\r\n\r\n",
            3 * (i + 1),
            5 + 3 * (i + 1)
        );
        Some((Ok::<_, std::io::Error>(Bytes::from(event)), i + 1))
    });
    let mut r = Response::new(Body::from_stream(events));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn reply(b: &Arc<Bodies>, uri: &Uri) -> Response {
    let path = uri.path();
    if let Some(n) = slow_events(uri).filter(|_| path.ends_with(":streamGenerateContent")) {
        return slow_stream(n);
    }
    let (body, ct) = if path.ends_with(":streamGenerateContent") {
        (b.sse.clone(), "text/event-stream")
    } else if path.ends_with(":predict") {
        (b.imagen.clone(), "application/json; charset=UTF-8")
    } else {
        (b.json.clone(), "application/json; charset=UTF-8")
    };
    let mut r = Response::new(Body::from(body));
    if let Ok(v) = ct.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9700".into());
    let b = Arc::new(bodies());
    // The request body is read (and dropped): hyper closes a connection whose request body was
    // left unread, which made every proxy open a new upstream connection per request.
    let app = axum::Router::new().fallback(move |uri: Uri, _body: Bytes| {
        let b = b.clone();
        async move { reply(&b, &uri) }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("fake upstream on {addr}");
    axum::serve(listener, app).await
}
