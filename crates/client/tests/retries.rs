//! The retry rules against scripted servers: a write is retried only when
//! the answer proves it was not applied; a read fails over freely; an
//! endpoint nobody listens on is skipped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{Client, ClientConfig, ClientError};
use proto::etcdserverpb as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// A KV server that answers every call with `answer` and counts calls.
#[derive(Clone)]
struct Scripted {
    answer: Option<(tonic::Code, &'static str)>,
    calls: Arc<AtomicUsize>,
}

impl Scripted {
    fn reply<T: Default>(&self) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.answer {
            Some((code, message)) => Err(Status::new(code, message)),
            None => Ok(Response::new(T::default())),
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Scripted {
    async fn range(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.reply()
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.reply()
    }
    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.reply()
    }
    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        self.reply()
    }
    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.reply()
    }
}

async fn serve(answer: Option<(tonic::Code, &'static str)>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let service = Scripted {
        answer,
        calls: calls.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, calls)
}

fn client(addrs: &[SocketAddr]) -> Client {
    let mut config = ClientConfig::new(addrs.iter().map(|addr| addr.to_string()));
    config.request_timeout = Duration::from_secs(3);
    Client::new(config).expect("client")
}

fn dead_endpoint() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn a_write_of_unknown_outcome_is_not_retried() {
    let (first, first_calls) = serve(Some((
        tonic::Code::Unavailable,
        "etcdserver: request timed out",
    )))
    .await;
    let (second, second_calls) = serve(None).await;
    let error = client(&[first, second])
        .put("k", "v")
        .await
        .expect_err("must fail");
    assert!(matches!(error, ClientError::Unknown { .. }), "{error}");
    assert!(error.outcome_unknown());
    assert_eq!(first_calls.load(Ordering::SeqCst), 1);
    assert_eq!(second_calls.load(Ordering::SeqCst), 0, "never sent twice");
}

#[tokio::test]
async fn a_write_refused_before_proposal_goes_to_the_next_endpoint() {
    let (first, first_calls) =
        serve(Some((tonic::Code::Unavailable, "etcdserver: no leader"))).await;
    let (second, second_calls) = serve(None).await;
    client(&[first, second])
        .put("k", "v")
        .await
        .expect("the second endpoint serves it");
    assert_eq!(first_calls.load(Ordering::SeqCst), 1);
    assert_eq!(second_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_read_fails_over_on_any_unavailable() {
    let (first, _) = serve(Some((
        tonic::Code::Unavailable,
        "etcdserver: request timed out",
    )))
    .await;
    let (second, second_calls) = serve(None).await;
    let client = client(&[first, second]);
    client
        .get("k")
        .await
        .expect("the second endpoint serves it");
    assert_eq!(second_calls.load(Ordering::SeqCst), 1);
    // The endpoint that answered is preferred from now on.
    client.get("k").await.expect("read");
    assert_eq!(second_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_is_skipped_for_writes_too() {
    let (live, calls) = serve(None).await;
    client(&[dead_endpoint(), live])
        .put("k", "v")
        .await
        .expect("served by the live endpoint");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_final_error_is_returned_at_once_with_etcds_text() {
    let (first, first_calls) = serve(Some((
        tonic::Code::InvalidArgument,
        "etcdserver: key is not provided",
    )))
    .await;
    let (second, second_calls) = serve(None).await;
    let error = client(&[first, second])
        .put("", "v")
        .await
        .expect_err("refused");
    assert_eq!(error.to_string(), "etcdserver: key is not provided");
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));
    assert_eq!(
        first_calls.load(Ordering::SeqCst) + second_calls.load(Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn no_live_endpoint_times_out_within_the_deadline() {
    let mut config = ClientConfig::new([dead_endpoint().to_string(), dead_endpoint().to_string()]);
    config.request_timeout = Duration::from_millis(600);
    let started = std::time::Instant::now();
    let error = Client::new(config)
        .expect("client")
        .get("k")
        .await
        .expect_err("nobody serves");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
