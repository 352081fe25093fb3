//! The admin endpoints: `/metrics` on the metrics address, `/healthz` and `/readyz` on the health
//! address. Both accept port 0 and report the address they bound, so several managers (leader
//! election tests) can share one host.
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use std::{convert::Infallible, net::SocketAddr};
use tokio::net::TcpListener;

use crate::{Error, process::metrics::Metrics, process::readiness::Readiness, process::shutdown::Shutdown};

#[derive(Clone)]
enum Endpoints {
    Metrics(Metrics),
    Health(Readiness),
}

/// Binds both admin listeners and serves them until shutdown. Returns the bound addresses.
pub async fn serve(
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: Shutdown,
) -> Result<(SocketAddr, SocketAddr), Error> {
    let metrics_listener = TcpListener::bind(metrics_addr).await?;
    let health_listener = TcpListener::bind(health_addr).await?;
    let bound = (metrics_listener.local_addr()?, health_listener.local_addr()?);
    tracing::info!(metrics_addr = %bound.0, health_addr = %bound.1, "admin server listening");
    tokio::spawn(accept(metrics_listener, Endpoints::Metrics(metrics), shutdown.clone()));
    tokio::spawn(accept(health_listener, Endpoints::Health(readiness), shutdown));
    Ok(bound)
}

async fn accept(listener: TcpListener, endpoints: Endpoints, shutdown: Shutdown) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin server accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Probes keep answering (not ready) while draining; only abort stops the server.
            () = shutdown.aborting() => return,
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(respond(&endpoints, &req)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn respond<B>(endpoints: &Endpoints, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n".to_owned());
    }
    match (endpoints, req.uri().path()) {
        (Endpoints::Metrics(metrics), "/metrics") => match metrics.render() {
            Ok(body) => text(StatusCode::OK, body),
            Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
        },
        // Liveness is the process answering at all: a manager cut off from the apiserver is not
        // helped by a restart, it recovers when its watches resume.
        (Endpoints::Health(_), "/healthz" | "/livez") => text(StatusCode::OK, "ok\n".to_owned()),
        (Endpoints::Health(readiness), "/readyz") => match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ok\n".to_owned()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).expect("request")
    }

    #[test]
    fn readyz_reports_what_it_waits_for() {
        let readiness = Readiness::new();
        let gate = readiness.gate("informer apps/deployments");
        let health = Endpoints::Health(readiness);
        assert_eq!(
            respond(&health, &get("/readyz")).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond(&health, &get("/healthz")).status(), StatusCode::OK);
        gate.ready();
        assert_eq!(respond(&health, &get("/readyz")).status(), StatusCode::OK);
        assert_eq!(respond(&health, &get("/metrics")).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn metrics_endpoint_serves_the_registry() {
        let metrics = Metrics::new().expect("metrics");
        metrics.register_controller("memcached");
        let response = respond(&Endpoints::Metrics(metrics), &get("/metrics"));
        assert_eq!(response.status(), StatusCode::OK);
    }
}
