//! etcd's overload answer, `too many requests` (ResourceExhausted), means
//! the member did not take the request: the client retries a write after a
//! backoff instead of failing it, while a quota refusal stays final.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ClientError};
use proto::etcdserverpb as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// Answers `refusals` puts with `refusal`, then succeeds; counts calls.
#[derive(Clone)]
struct Overloaded {
    refusal: (Code, &'static str),
    refusals: usize,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Overloaded {
    async fn range(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Err(Status::unimplemented("range"))
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.refusals {
            return Err(Status::new(self.refusal.0, self.refusal.1));
        }
        Ok(Response::new(pb::PutResponse::default()))
    }
    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }
    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }
    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

async fn serve(refusal: (Code, &'static str), refusals: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let service = Overloaded {
        refusal,
        refusals,
        calls: calls.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, calls)
}

fn client(addr: SocketAddr) -> Client {
    let mut config = ClientConfig::new([addr.to_string()]);
    config.request_timeout = Duration::from_secs(5);
    config.backoff_min = Duration::from_millis(20);
    Client::new(config).expect("client")
}

const TOO_MANY_REQUESTS: (Code, &str) = (Code::ResourceExhausted, "etcdserver: too many requests");

#[tokio::test]
async fn a_write_refused_as_too_many_requests_is_retried_after_a_backoff() {
    let (addr, calls) = serve(TOO_MANY_REQUESTS, 3).await;
    let started = Instant::now();
    client(addr)
        .put("k", "v")
        .await
        .expect("the write succeeds once the member takes it");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // 20 + 40 + 80 ms of backoff between the four attempts.
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "retried without backing off: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_member_that_stays_overloaded_fails_the_write_as_not_applied() {
    let (addr, calls) = serve(TOO_MANY_REQUESTS, usize::MAX).await;
    let mut config = ClientConfig::new([addr.to_string()]);
    config.request_timeout = Duration::from_millis(500);
    let error = Client::new(config)
        .expect("client")
        .put("k", "v")
        .await
        .expect_err("never taken");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    assert!(calls.load(Ordering::SeqCst) > 1, "it was retried");
    // Every attempt was refused before it was queued: the write is known
    // not to have been applied, though the deadline passed.
    let ClientError::Timeout { last: Some(last) } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(last.code(), Some(Code::ResourceExhausted));
}

#[tokio::test]
async fn a_quota_refusal_is_final() {
    let (addr, calls) = serve(
        (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ),
        usize::MAX,
    )
    .await;
    let error = client(addr).put("k", "v").await.expect_err("refused");
    assert_eq!(error.code(), Some(Code::ResourceExhausted));
    assert_eq!(
        error.to_string(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}
