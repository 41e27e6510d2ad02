//! Authorization by identity: a tower layer in front of a server's
//! services that lets only callers whose certificate names an allowed
//! identity (a DNS name or a SPIFFE-style URI among its SANs) call the
//! component's own API (such as `votemesh.v1.VoteService`, so CastVote);
//! anyone else gets PERMISSION_DENIED. Health and reflection stay open to
//! every caller the TLS handshake let in. With no list every certificate
//! from the trusted CA may call (the handshake already checked that).
//! A refused call is logged at debug level and counted
//! (`votemesh_tls_calls_denied_total`, by `rpc_service`).

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use tonic::{body::Body, codegen::http};
use tower::{Layer, Service};

use super::server::PeerInfo;

/// Who may call which service: built once per server.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    /// The guarded service's name, the label of the refusal counter.
    service: String,
    /// `/<service name>/`: the paths the list guards.
    guarded: Arc<str>,
    /// The allowed identities; empty: anyone the handshake let in.
    allowed: Arc<[String]>,
}

impl AuthorizeLayer {
    /// Guards calls to `service_name` with `allowed` (empty: no guard).
    pub fn new(service_name: &str, allowed: &[String]) -> Self {
        Self {
            service: service_name.to_owned(),
            guarded: format!("/{service_name}/").into(),
            allowed: allowed.iter().map(|name| name.trim().to_owned()).collect(),
        }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            policy: self.clone(),
        }
    }
}

/// The service [`AuthorizeLayer`] makes.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    policy: AuthorizeLayer,
}

impl AuthorizeLayer {
    /// Whether a call to `path` from a caller with `names` may go ahead.
    fn allows(&self, path: &str, names: &[String]) -> bool {
        self.allowed.is_empty()
            || !path.starts_with(&*self.guarded)
            || names.iter().any(|name| self.allowed.contains(name))
    }
}

impl<S, B> Service<http::Request<B>> for Authorize<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let names = request
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| peer.names.clone())
            .unwrap_or_else(|| Arc::new([]));
        let path = request.uri().path();
        if self.policy.allows(path, &names) {
            return Either::Right(self.inner.call(request));
        }
        metrics::counter!(
            "votemesh_tls_calls_denied_total",
            "rpc_service" => self.policy.service.clone()
        )
        .increment(1);
        tracing::debug!(
            path,
            caller = %names.join(" "),
            "call refused: the caller's certificate names no allowed identity"
        );
        let status = tonic::Status::permission_denied(
            "the caller's certificate names no identity allowed to call this service",
        );
        Either::Left(ready(Ok(status.into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_guarded_service_needs_an_allowed_name() {
        let policy = AuthorizeLayer::new(
            "votemesh.v1.VoteService",
            &["spiffe://votemesh/gateway".into()],
        );
        let cast = "/votemesh.v1.VoteService/CastVote";
        assert!(policy.allows(cast, &["vote".into(), "spiffe://votemesh/gateway".into()]));
        assert!(!policy.allows(cast, &["spiffe://votemesh/intruder".into()]));
        assert!(!policy.allows(cast, &[]));
        assert!(policy.allows("/grpc.health.v1.Health/Check", &[]));
        let open = AuthorizeLayer::new("votemesh.v1.VoteService", &[]);
        assert!(open.allows(cast, &[]));
    }
}
