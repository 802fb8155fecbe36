//! The compare transaction, shared by both protocols.
//!
//! Order (each step refuses before the more expensive ones run; the
//! transport has already authenticated, rate-limited and parsed the body):
//! `Idempotency-Key` (replay / mismatch / in progress) → balance check
//! (before heavy work) → fetch S3 inputs → engine → answer → charge and
//! idempotency record (one transaction).
//!
//! The answer is rendered by the transport *before* the charge, through the
//! `answer` callback: a transport that refuses the result (Rekognition
//! refuses a source image without a face) does so uncharged, and an
//! idempotent replay returns exactly the bytes first sent.
use std::time::Instant;

use bytes::Bytes;
use tokio::{sync::oneshot, time::timeout_at};

use crate::{
    accounts::{Accounts, AccountsError, IdempotencyBegin, Org, StoredAnswer},
    app::App,
    faces::{Comparison, FacesError},
    inputs::{self, CompareInputs, ImageInput, InputError},
};

/// One compare, as every transport hands it over.
pub struct CompareRequest {
    pub inputs: CompareInputs,
    /// A validated idempotency key (native API only).
    pub idempotency_key: Option<String>,
    /// When the request gives up (`FACECOMPARE_REQUEST_TIMEOUT_S` from its start).
    pub deadline: tokio::time::Instant,
    /// Recorded with the charge in the ledger.
    pub request_id: String,
    /// The request's own threshold (Rekognition's `SimilarityThreshold`);
    /// `None`: the organisation's. The engine runs the age pass only where
    /// the ages can change the decision at it.
    pub threshold: Option<f64>,
}

/// A finished compare.
pub enum Outcome {
    /// Compared and charged; `body` is what the transport's `answer` rendered.
    Done {
        body: String,
        comparison: Box<Comparison>,
        threshold: f64,
        /// Tokens charged (0 when compares are free).
        charged: i64,
    },
    /// The same idempotency key and inputs finished earlier: its stored answer, uncharged.
    Replay { status: u16, body: String },
}

/// Why a compare did not complete; nothing was charged in any case.
#[derive(Debug)]
pub enum CompareError {
    /// An input could not be resolved (S3 ownership, missing object, store down, ...).
    Input(InputError),
    /// The engine refused an image, was overloaded or failed.
    Faces(FacesError),
    Accounts(AccountsError),
    /// `balance` is None when the charge itself found too few tokens (a race).
    InsufficientBalance {
        balance: Option<i64>,
        cost: i64,
    },
    IdempotencyMismatch,
    IdempotencyInProgress,
    /// The request deadline passed.
    TimedOut,
    /// The client disconnected before the charge.
    ClientGone,
    /// The transport's `answer` refused a result without a face in the source image.
    NoSourceFace,
    /// A bug or an impossible state; the detail is logged, never sent.
    Internal(String),
}

impl From<InputError> for CompareError {
    fn from(e: InputError) -> Self {
        CompareError::Input(e)
    }
}

impl From<FacesError> for CompareError {
    fn from(e: FacesError) -> Self {
        CompareError::Faces(e)
    }
}

impl From<AccountsError> for CompareError {
    fn from(e: AccountsError) -> Self {
        CompareError::Accounts(e)
    }
}

/// Runs one compare for `org`. `answer` renders the transport's body from the
/// comparison and the threshold (the request's, else the organisation's); it
/// runs before the charge.
pub async fn compare(
    app: &App,
    org: &Org,
    req: CompareRequest,
    client_gone: &mut oneshot::Receiver<()>,
    answer: impl FnOnce(&Comparison, f64) -> Result<String, CompareError>,
) -> Result<Outcome, CompareError> {
    let CompareRequest {
        inputs,
        idempotency_key,
        deadline,
        request_id,
        threshold,
    } = req;
    let threshold = threshold.unwrap_or(org.threshold.unwrap_or(app.config.threshold));
    let reservation = match idempotency_key {
        None => None,
        Some(key) => match app
            .accounts
            .idempotency_begin_leased(
                &org.id,
                &key,
                &inputs.fingerprint(),
                app.config.request_timeout + crate::accounts::IDEMPOTENCY_LEASE_MARGIN,
            )
            .await?
        {
            IdempotencyBegin::New => Some(Reservation {
                accounts: app.accounts.clone(),
                org_id: org.id.clone(),
                key,
                armed: true,
            }),
            IdempotencyBegin::Replay { status, body } => {
                return Ok(Outcome::Replay { status, body });
            }
            IdempotencyBegin::Mismatch => return Err(CompareError::IdempotencyMismatch),
            IdempotencyBegin::InProgress => return Err(CompareError::IdempotencyInProgress),
        },
    };

    let cost = app.config.token_cost;
    if cost > 0 {
        let balance = app.accounts.balance(&org.id).await?;
        if balance < cost {
            return Err(CompareError::InsufficientBalance {
                balance: Some(balance),
                cost,
            });
        }
    }

    let (source, target) = until(deadline, client_gone, resolve_both(app, org, inputs)).await??;
    let comparison = until(
        deadline,
        client_gone,
        app.engine.compare(&org.id, source, target, threshold),
    )
    .await??;
    let t = &comparison.timings;
    for (stage, d) in [
        ("queue", t.queue),
        ("decode", t.decode),
        ("detect", t.detect),
        ("embed", t.embed),
    ] {
        app.metrics.observe_stage(stage, d.as_secs_f64());
    }
    if !comparison.confidence.is_finite() {
        return Err(CompareError::Internal(
            "the engine returned a non-finite confidence".into(),
        ));
    }
    let body = answer(&comparison, threshold)?;

    if cost > 0 {
        // The stored answer goes with the debit, in one transaction.
        let answer = reservation.as_ref().map(|r| StoredAnswer {
            key: &r.key,
            status: 200,
            body: &body,
        });
        match app
            .accounts
            .charge_with_answer(&org.id, cost, &request_id, answer)
            .await?
        {
            Some(_) => {
                app.metrics.tokens_charged.inc_by(cost as u64);
                if let Some(r) = reservation {
                    r.stored();
                }
            }
            None => {
                return Err(CompareError::InsufficientBalance {
                    balance: None,
                    cost,
                });
            }
        }
    } else if let Some(r) = reservation {
        r.finish(200, &body).await;
    }
    Ok(Outcome::Done {
        body,
        comparison: Box::new(comparison),
        threshold,
        charged: cost,
    })
}

/// A reserved idempotency key: released (so a retry runs again) unless the
/// request finished, also when the task fails or panics.
struct Reservation {
    accounts: Accounts,
    org_id: String,
    key: String,
    armed: bool,
}

impl Reservation {
    /// The answer was stored with the debit: nothing left to release.
    fn stored(mut self) {
        self.armed = false;
    }

    async fn finish(mut self, status: u16, body: &str) {
        self.armed = false;
        if let Err(e) = self
            .accounts
            .idempotency_finish(&self.org_id, &self.key, status, body)
            .await
        {
            // The compare is done and charged; answering it beats failing it.
            tracing::error!(error = %e, "could not store the idempotent response");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (accounts, org_id, key) = (
            self.accounts.clone(),
            std::mem::take(&mut self.org_id),
            std::mem::take(&mut self.key),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = accounts.idempotency_abandon(&org_id, &key).await {
                    tracing::error!(error = %e, "could not release an idempotency key");
                }
            });
        }
    }
}

/// `work` unless the deadline passes or the client goes first (then `work`
/// is dropped: its queued images are skipped, a running one stops at its
/// next stage).
pub async fn until<F: std::future::Future>(
    deadline: tokio::time::Instant,
    client_gone: &mut oneshot::Receiver<()>,
    work: F,
) -> Result<F::Output, CompareError> {
    tokio::select! {
        out = timeout_at(deadline, work) => out.map_err(|_| CompareError::TimedOut),
        _ = client_gone => Err(CompareError::ClientGone),
    }
}

/// Turns both inputs into bytes, fetching S3 references concurrently.
async fn resolve_both(
    app: &App,
    org: &Org,
    inputs: CompareInputs,
) -> Result<(Bytes, Bytes), CompareError> {
    let (source, target) = tokio::join!(
        resolve(app, org, "source", inputs.source),
        resolve(app, org, "target", inputs.target)
    );
    Ok((source?, target?))
}

async fn resolve(
    app: &App,
    org: &Org,
    field: &str,
    input: ImageInput,
) -> Result<Bytes, CompareError> {
    match input {
        ImageInput::Bytes(b) => Ok(b),
        ImageInput::S3(reference) => {
            let Some(s3) = &app.s3 else {
                return Err(InputError::S3NotConfigured {
                    field: field.into(),
                }
                .into());
            };
            let started = Instant::now();
            let fetched = s3.fetch(&org.s3_prefix, field, &reference).await;
            app.metrics
                .observe_stage("s3", started.elapsed().as_secs_f64());
            let bytes = fetched?;
            inputs::check_image_bytes(field, &bytes)?;
            Ok(bytes)
        }
    }
}
