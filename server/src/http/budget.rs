//! How many bytes of request bodies the server holds at once.
//!
//! A request body is read and parsed before its transaction can start, and with one writer
//! (SQLite) or a few (PostgreSQL) the requests that arrive together wait their turn — parsed, at
//! several times their size on the wire. A hundred runners' reports of 10,000 subtasks each
//! arriving in the same second held about 800 MiB that way. A request now takes its declared
//! size (`Content-Length`, or the body limit when it has none) from a budget before its body is
//! read, and gives it back when it is answered — or earlier, as soon as its work is done (a
//! report hands its budget back before the claim riding on it waits for work). A request larger
//! than the whole budget waits for all of it and then runs alone. Reads and the long-polling
//! claim, whose bodies are tiny, take nothing.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;

/// The budget of request-body bytes in flight, counted in KiB.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    kib: u32,
}

impl BodyBudget {
    /// A budget of `bytes` (at least 1 KiB, at most 4 TiB).
    pub fn new(bytes: usize) -> Self {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        BodyBudget {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// KiB a body of `bytes` takes: rounded up, at most the whole budget.
    fn share(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib)
    }

    /// KiB free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// A request's share of the budget; [`BodyPermit::release`] hands it back early.
#[derive(Clone)]
pub struct BodyPermit(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl BodyPermit {
    /// Gives the share back now (the request's body is no longer held).
    pub fn release(&self) {
        if let Ok(mut held) = self.0.lock() {
            held.take();
        }
    }
}

/// Middleware: waits for the request's share of the budget before its body is read.
pub async fn hold(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let tiny = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || request.uri().path() == "/v1/runner/claim";
    if tiny {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(state.max_body as u64);
    let budget = &state.body_budget;
    let share = budget.share(declared.min(state.max_body as u64));
    let Ok(permit) = budget.permits.clone().acquire_many_owned(share).await else {
        // The semaphore is never closed; were it, the request runs unbudgeted.
        return next.run(request).await;
    };
    let permit = BodyPermit(Arc::new(Mutex::new(Some(permit))));
    request.extensions_mut().insert(permit.clone());
    let response = next.run(request).await;
    permit.release();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_up_and_never_exceed_the_budget() {
        let budget = BodyBudget::new(16 << 20);
        assert_eq!(budget.share(0), 1);
        assert_eq!(budget.share(1), 1);
        assert_eq!(budget.share(1025), 2);
        assert_eq!(budget.share(u64::MAX), 16 << 10);
        assert_eq!(BodyBudget::new(0).kib, 1);
    }

    #[tokio::test]
    async fn a_released_share_is_free_at_once_and_only_once() {
        let budget = BodyBudget::new(4 << 10);
        let held = budget.permits.clone().acquire_many_owned(3).await.unwrap();
        let permit = BodyPermit(Arc::new(Mutex::new(Some(held))));
        assert_eq!(budget.available(), 1);
        let copy = permit.clone();
        permit.release();
        copy.release();
        assert_eq!(budget.available(), 4);
    }
}
