//! The HTTP face of the simulated API server (HTTP/1.1, JSON), over any byte stream: a
//! tokio TCP connection for `contiv-harness apiserver`, a turmoil one in the simulation.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::resources::{self, Kind};
use super::{ApiError, ApiServer, Query};

type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted (the real API server's limit is about the same).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Accepts connections until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, server: ApiServer) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, server).await {
                tracing::debug!(error = %e, "apiserver connection ended");
            }
        });
    }
}

/// Serves one connection.
pub async fn serve_connection<IO>(io: IO, server: ApiServer) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .serve_connection(
            TokioIo::new(io),
            hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(server, req).await) }
            }),
        )
        .await
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code(), &e.status())
}

/// Where a request points. (`<name>/status` is the same object here: the status
/// subresource has no separate rules in this server.)
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

enum Route {
    Json(Value),
    Resource(Target),
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Json(resources::version()),
        ["healthz"] | ["readyz"] | ["livez"] => return Route::Json(json!("ok")),
        ["api"] => return Route::Json(resources::api_versions()),
        ["apis"] => return Route::Json(resources::api_group_list()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return resources::api_resource_list(group, version).map_or(Route::NotFound, Route::Json);
    }
    let kind_of = |plural: &str| Kind::by_plural(group, version, plural);
    let (kind, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if kind_of(plural).is_some_and(|k| k.info().namespaced) =>
        {
            (kind_of(plural), Some(ns.to_string()), tail)
        }
        [plural, tail @ ..] => (kind_of(plural), None, tail),
        [] => (None, None, &[][..]),
    };
    let Some(kind) = kind else {
        return Route::NotFound;
    };
    match tail {
        [] => Route::Resource(Target {
            kind,
            namespace,
            name: None,
        }),
        [name] | [name, "status"] => Route::Resource(Target {
            kind,
            namespace,
            name: Some(name.to_string()),
        }),
        _ => Route::NotFound,
    }
}

async fn handle(server: ApiServer, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let params: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.clone())
    };
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let target = match route(&path) {
        Route::Json(v) if method == Method::GET => return json_response(200, &v),
        Route::Json(_) => return error_response(&ApiError::MethodNotAllowed),
        Route::NotFound => {
            return error_response(&ApiError::NotFound {
                kind: "path",
                name: path,
            });
        }
        Route::Resource(t) => t,
    };
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let ns = target.namespace.as_deref();
    let result = match (&method, &target.name) {
        (&Method::GET, None) => {
            let q = Query {
                namespace: target.namespace.clone(),
                label_selector: param("labelSelector"),
                field_selector: param("fieldSelector"),
                limit: param("limit").and_then(|l| l.parse().ok()),
                continue_token: param("continue"),
            };
            if matches!(param("watch").as_deref(), Some("1" | "true")) {
                return watch_response(&server, target.kind, q, &params);
            }
            server
                .list(target.kind, &q)
                .map(|page| list_json(target.kind, page))
        }
        (&Method::GET, Some(name)) => server.get(target.kind, ns, name),
        (&Method::POST, None) => parse(&body).and_then(|obj| server.create(target.kind, ns, obj)),
        (&Method::PUT, Some(name)) => {
            parse(&body).and_then(|obj| server.update(target.kind, ns, name, obj))
        }
        (&Method::PATCH, Some(name)) => {
            if content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json")
            {
                parse(&body).and_then(|p| server.patch(target.kind, ns, name, &p))
            } else {
                Err(ApiError::BadRequest(format!(
                    "patch type {content_type:?} is not supported; use a merge patch"
                )))
            }
        }
        (&Method::DELETE, Some(name)) => server.delete(target.kind, ns, name),
        _ => Err(ApiError::MethodNotAllowed),
    };
    let created = method == Method::POST;
    match result {
        Ok(v) => json_response(if created { 201 } else { 200 }, &v),
        Err(e) => error_response(&e),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    limited.collect().await.map(|c| c.to_bytes()).map_err(|e| {
        ApiError::BadRequest(format!(
            "cannot read the body (at most {MAX_BODY} bytes): {e}"
        ))
    })
}

fn parse(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))
}

fn list_json(kind: Kind, page: super::ListResult) -> Value {
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = page.continue_token {
        metadata["continue"] = json!(c);
    }
    json!({"kind": format!("{}List", kind.info().name), "apiVersion": kind.api_version(), "metadata": metadata, "items": page.items})
}

fn watch_response(
    server: &ApiServer,
    kind: Kind,
    q: Query,
    params: &[(String, String)],
) -> Response<Body> {
    let param = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    };
    let from: u64 = param("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let bookmarks = matches!(param("allowWatchBookmarks"), Some("true" | "1"));
    let timeout = param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let line = |v: &Value| {
        let mut b = serde_json::to_vec(v).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    };
    match server.watch(kind, &q, from) {
        Err(e @ ApiError::Gone { .. }) => {
            // As a real server: a 200 stream whose one event is the 410 error.
            let _ = tx.try_send(line(&json!({"type": "ERROR", "object": e.status()})));
        }
        Err(e) => return error_response(&e),
        Ok(mut events) => {
            // Without a resourceVersion the watch starts with the current objects.
            let initial = if from == 0 {
                server.list(kind, &q).map(|p| p.items).unwrap_or_default()
            } else {
                Vec::new()
            };
            let server = server.clone();
            tokio::spawn(async move {
                for obj in initial {
                    if tx
                        .send(line(&json!({"type": "ADDED", "object": obj})))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
                let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
                bookmark.tick().await;
                loop {
                    let until_deadline = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        ev = events.recv() => match ev {
                            Some(ev) => if tx.send(line(&ev)).await.is_err() { return },
                            None => return,
                        },
                        _ = bookmark.tick(), if bookmarks => {
                            let rv = server.resource_version().to_string();
                            let b = json!({"type": "BOOKMARK", "object": {"kind": kind.info().name, "apiVersion": kind.api_version(), "metadata": {"resourceVersion": rv}}});
                            if tx.send(line(&b)).await.is_err() { return }
                        }
                        _ = until_deadline => return,
                        _ = tx.closed() => return,
                    }
                }
            });
        }
    }
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}
