//! An async client for raftkv, speaking only the etcd v3 API (so it works
//! against etcd too).
//!
//! - [`Client`]: several endpoints; a request goes to the endpoint that
//!   last answered and fails over to the next on `Unavailable` or a
//!   connection error, with exponential backoff, within a per-request
//!   deadline.
//! - Retries only where they are safe: reads are retried on any endpoint;
//!   a write is retried only when the error proves it was never applied
//!   (no connection could be made, or the server refused it before
//!   proposing it: `no leader`, or `too many requests`, which is retried
//!   with the same backoff as a failover). Otherwise the caller gets
//!   [`ClientError::Unknown`]: the write may or may not have taken effect
//!   (`leader changed` and `request timed out` among them).
//! - A typed API: [`Client::put`], [`Client::get`], [`Client::range`],
//!   [`Client::delete`], [`Client::txn`] with the [`Txn`] builder,
//!   [`Client::compact`], [`Client::member_list`], [`Client::status`].
//!
//! The client never retries a write whose outcome it cannot know, and never
//! hides which endpoint answered an error.

mod error;
mod txn;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::mvccpb::KeyValue;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

pub use error::ClientError;
pub use txn::{Compare, CompareOp, Txn, TxnOp};

/// How a [`Client`] behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// Deadline of one call, failovers and retries included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// First wait after a failed attempt; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(25),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// Whether a request may be sent again after an error of unknown outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Safety {
    /// Reads: sending again changes nothing.
    Idempotent,
    /// Writes: only when the error proves the first attempt was not applied.
    Once,
}

struct EndpointState {
    url: String,
    /// Connected lazily; dropped after a connection error so the next use
    /// reconnects.
    channel: Mutex<Option<Channel>>,
}

/// A client of a raftkv (or etcd) cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    endpoints: Arc<Vec<EndpointState>>,
    /// The endpoint that answered last: where the next request goes first.
    preferred: Arc<AtomicUsize>,
    config: ClientConfig,
}

fn normalize(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// What one attempt at one endpoint came to.
enum Attempt<T> {
    Done(T),
    /// Try another endpoint; `applied_maybe` says whether this attempt
    /// could have taken effect.
    Failover {
        error: ClientError,
        applied_maybe: bool,
    },
    Fail(ClientError),
}

impl Client {
    /// A client of `config.endpoints`. Connects lazily: a cluster that is
    /// down at this point is reported by the first request.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for endpoint in &config.endpoints {
            Endpoint::from_shared(normalize(endpoint)).map_err(|error| {
                ClientError::InvalidEndpoint {
                    endpoint: endpoint.clone(),
                    reason: error.to_string(),
                }
            })?;
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| EndpointState {
                url: normalize(endpoint),
                channel: Mutex::new(None),
            })
            .collect();
        Ok(Client {
            endpoints: Arc::new(endpoints),
            preferred: Arc::new(AtomicUsize::new(0)),
            config,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    async fn channel(&self, position: usize) -> Result<Channel, ClientError> {
        let state = &self.endpoints[position];
        let mut slot = state.channel.lock().await;
        if let Some(channel) = slot.as_ref() {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(state.url.clone())
            .map_err(|error| ClientError::InvalidEndpoint {
                endpoint: state.url.clone(),
                reason: error.to_string(),
            })?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| ClientError::Connect {
                endpoint: state.url.clone(),
                reason: error.to_string(),
            })?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    async fn forget_channel(&self, position: usize) {
        *self.endpoints[position].channel.lock().await = None;
    }

    /// Runs `call` against the endpoints, failing over and retrying as
    /// `safety` allows, within the request timeout.
    async fn run<T, F, Fut>(&self, safety: Safety, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        let count = self.endpoints.len();
        let mut position = self.preferred.load(Ordering::Relaxed) % count;
        let mut backoff = self.config.backoff_min;
        loop {
            let attempt = self.attempt(position, deadline, &call).await;
            let (error, applied_maybe) = match attempt {
                Attempt::Done(value) => {
                    self.preferred.store(position, Ordering::Relaxed);
                    return Ok(value);
                }
                Attempt::Fail(error) => return Err(error),
                Attempt::Failover {
                    error,
                    applied_maybe,
                } => (error, applied_maybe),
            };
            if applied_maybe && safety == Safety::Once {
                return Err(ClientError::Unknown {
                    source: Box::new(error),
                });
            }
            position = (position + 1) % count;
            if Instant::now() + backoff >= deadline {
                return Err(ClientError::Timeout {
                    last: Some(Box::new(error)),
                });
            }
            // Back off only after every endpoint was tried once.
            if position == self.preferred.load(Ordering::Relaxed) % count {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
    }

    async fn attempt<T, F, Fut>(&self, position: usize, deadline: Instant, call: &F) -> Attempt<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let channel = match tokio::time::timeout(left, self.channel(position)).await {
            Ok(Ok(channel)) => channel,
            // Nothing was sent: always safe to go elsewhere.
            Ok(Err(error)) => {
                return Attempt::Failover {
                    error,
                    applied_maybe: false,
                }
            }
            Err(_) => {
                return Attempt::Failover {
                    error: ClientError::Connect {
                        endpoint: self.endpoints[position].url.clone(),
                        reason: "connect timed out".to_string(),
                    },
                    applied_maybe: false,
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, call(channel)).await {
            Ok(Ok(value)) => Attempt::Done(value),
            Ok(Err(status)) => {
                let endpoint = self.endpoints[position].url.clone();
                let error = ClientError::from_status(endpoint, &status);
                match error::classify(&status) {
                    error::Class::Final => Attempt::Fail(error),
                    error::Class::NotApplied => {
                        if error::is_connection_error(&status) {
                            self.forget_channel(position).await;
                        }
                        Attempt::Failover {
                            error,
                            applied_maybe: false,
                        }
                    }
                    error::Class::Unknown => {
                        if error::is_connection_error(&status) {
                            self.forget_channel(position).await;
                        }
                        Attempt::Failover {
                            error,
                            applied_maybe: true,
                        }
                    }
                }
            }
            Err(_) => Attempt::Failover {
                error: ClientError::Timeout { last: None },
                applied_maybe: true,
            },
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<pb::PutResponse, ClientError> {
        self.put_request(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..pb::PutRequest::default()
        })
        .await
    }

    /// A put with every option of `PutRequest` (lease, prev_kv, ...).
    pub async fn put_request(
        &self,
        request: pb::PutRequest,
    ) -> Result<pb::PutResponse, ClientError> {
        self.run(Safety::Once, |channel| {
            let request = request.clone();
            async move {
                pb::kv_client::KvClient::new(channel)
                    .put(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// The current value of `key` (linearizable), if it exists.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, ClientError> {
        let response = self
            .range(pb::RangeRequest {
                key: key.into(),
                ..pb::RangeRequest::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next())
    }

    /// A range with every option of `RangeRequest`.
    pub async fn range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.run(Safety::Idempotent, |channel| {
            let request = request.clone();
            async move {
                pb::kv_client::KvClient::new(channel)
                    .range(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<i64, ClientError> {
        let response = self
            .delete_range(pb::DeleteRangeRequest {
                key: key.into(),
                ..pb::DeleteRangeRequest::default()
            })
            .await?;
        Ok(response.deleted)
    }

    pub async fn delete_range(
        &self,
        request: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        self.run(Safety::Once, |channel| {
            let request = request.clone();
            async move {
                pb::kv_client::KvClient::new(channel)
                    .delete_range(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Runs a transaction. One with only reads is retried like a read.
    pub async fn txn(&self, txn: Txn) -> Result<pb::TxnResponse, ClientError> {
        let request = txn.into_request();
        let safety = if txn::is_read_only(&request) {
            Safety::Idempotent
        } else {
            Safety::Once
        };
        self.run(safety, |channel| {
            let request = request.clone();
            async move {
                pb::kv_client::KvClient::new(channel)
                    .txn(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Compacts the history up to `revision`. Idempotent: compacting again
    /// to the same revision is refused as already compacted, not applied
    /// twice.
    pub async fn compact(&self, revision: i64) -> Result<pb::CompactionResponse, ClientError> {
        self.run(Safety::Once, |channel| async move {
            pb::kv_client::KvClient::new(channel)
                .compact(pb::CompactionRequest {
                    revision,
                    physical: false,
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.run(Safety::Idempotent, |channel| async move {
            pb::cluster_client::ClusterClient::new(channel)
                .member_list(pb::MemberListRequest::default())
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// `Maintenance.Status` of one endpoint (by its position in the
    /// configuration); no failover, since the answer is about that member.
    pub async fn status(&self, position: usize) -> Result<pb::StatusResponse, ClientError> {
        self.at_endpoint(position, |channel| async move {
            pb::maintenance_client::MaintenanceClient::new(channel)
                .status(pb::StatusRequest::default())
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// `Maintenance.Defragment` of one endpoint: that member compacts its
    /// storage files; answered once done.
    pub async fn defragment(&self, position: usize) -> Result<pb::DefragmentResponse, ClientError> {
        self.at_endpoint(position, |channel| async move {
            pb::maintenance_client::MaintenanceClient::new(channel)
                .defragment(pb::DefragmentRequest::default())
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// `Maintenance.HashKV` of one endpoint at `revision` (0: current).
    pub async fn hash_kv(
        &self,
        position: usize,
        revision: i64,
    ) -> Result<pb::HashKvResponse, ClientError> {
        self.at_endpoint(position, |channel| async move {
            pb::maintenance_client::MaintenanceClient::new(channel)
                .hash_kv(pb::HashKvRequest { revision })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// A linearizable read of one endpoint: does it serve? (etcdctl's
    /// `endpoint health` does the same with a get of a health key.)
    pub async fn health(&self, position: usize) -> Result<Duration, ClientError> {
        let started = Instant::now();
        self.at_endpoint(position, |channel| async move {
            pb::kv_client::KvClient::new(channel)
                .range(pb::RangeRequest {
                    key: Bytes::from_static(b"health"),
                    ..pb::RangeRequest::default()
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await?;
        Ok(started.elapsed())
    }

    /// The configured endpoints, normalized to URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|state| state.url.clone())
            .collect()
    }

    async fn at_endpoint<T, F, Fut>(&self, position: usize, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        if position >= self.endpoints.len() {
            return Err(ClientError::NoEndpoints);
        }
        let deadline = Instant::now() + self.config.request_timeout;
        match self.attempt(position, deadline, &call).await {
            Attempt::Done(value) => Ok(value),
            Attempt::Fail(error) | Attempt::Failover { error, .. } => Err(error),
        }
    }
}
