//! A check that answers a request itself or passes it on, as a tower
//! layer: admission's refusals at the door (what it would refuse at once
//! anyway, before the request's span and body read) and the edge's (a
//! cross-site post, the vote rate limit) are decided from the request's
//! head alone, so they need no future of their own.
//!
//! ```text
//! request ─► check(&request) ─ Some(answer) ─► answered here
//!                 │ None
//!                 └─► the rest of the stack
//! ```
//!
//! axum's `from_fn` middleware would do the same, at the price of boxing
//! the rest of the stack and its future for every request: every served
//! vote paid that once for each of the gateway's middlewares, and the
//! gateway's share of a vote is what this crate's benchmarks hold against
//! hyper alone (docs/BENCHMARKS.md).

use std::{
    future::{Ready, ready},
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
use futures_util::future::Either;

/// Puts `check` in front of a service.
#[derive(Clone, Debug)]
pub struct GateLayer<F> {
    check: F,
}

impl<F> GateLayer<F>
where
    F: Fn(&Request) -> Option<Response>,
{
    /// A gate that answers what `check` answers and passes on the rest.
    pub fn new(check: F) -> Self {
        Self { check }
    }
}

impl<S, F: Clone> tower::Layer<S> for GateLayer<F> {
    type Service = Gate<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            check: self.check.clone(),
        }
    }
}

/// The service [`GateLayer`] makes.
#[derive(Clone, Debug)]
pub struct Gate<S, F> {
    inner: S,
    check: F,
}

impl<S, F> tower::Service<Request> for Gate<S, F>
where
    S: tower::Service<Request, Response = Response>,
    F: Fn(&Request) -> Option<Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match (self.check)(&request) {
            // The inner service was polled ready and is not called: the
            // routes behind a gate are always ready, so that reserves
            // nothing.
            Some(answer) => Either::Left(ready(Ok(answer))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}
