//! The peer transport over real loopback gRPC: messages arrive in order and
//! intact; a member of another cluster is refused before any of its messages
//! reach Raft, and the sender learns the peer is unreachable.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use proto::peer::peer_server::PeerServer;
use raft::{Entry, Message, MessageBody};
use server::node::{inbox, NodeInbox, PeerEvent};
use server::peer::{LocalIdentity, PeerService, Transport};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

async fn serve_member(identity: LocalIdentity) -> (SocketAddr, NodeInbox) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (peer_events, events_rx) = inbox();
    let service = PeerServer::new(PeerService::new(identity, peer_events));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, events_rx)
}

/// The sending side: member `member_id` of cluster `cluster_id`, with its
/// own event channel (unreachable peers, undelivered proposals).
fn sender(cluster_id: u64, member_id: u64) -> (Transport, NodeInbox) {
    let (events, events_rx) = inbox();
    let transport = Transport::new(
        LocalIdentity {
            cluster_id,
            member_id,
        },
        events,
    );
    (transport, events_rx)
}

fn append(from: u64, to: u64, index: u64) -> Message {
    Message {
        from,
        to,
        term: 3,
        body: MessageBody::AppendEntries {
            prev_log_index: index - 1,
            prev_log_term: 3,
            entries: vec![Entry::normal(
                3,
                index,
                Bytes::from(format!("value-{index}")),
            )],
            commit: index - 1,
        },
    }
}

#[tokio::test]
async fn messages_arrive_in_order_and_intact() {
    let receiver = LocalIdentity {
        cluster_id: 7,
        member_id: 2,
    };
    let (addr, mut received) = serve_member(receiver).await;
    let (transport, _sender_events_rx) = sender(7, 1);
    transport.set_peer(2, vec![format!("http://{addr}")]);

    let sent: Vec<Message> = (1..=200).map(|index| append(1, 2, index)).collect();
    for chunk in sent.chunks(10) {
        transport.send(chunk.to_vec(), &mut Vec::new());
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match tokio::time::timeout(Duration::from_secs(10), received.recv_peer_event()).await {
            Ok(Some(PeerEvent::Received(message))) => got.push(message),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("only {} of {} messages arrived", got.len(), sent.len()),
        }
    }
    assert_eq!(got, sent);
}

/// Forwarded writes and refusals travel in the same stream as Raft
/// messages, after the messages queued before them, and name the sender.
#[tokio::test]
async fn forwarded_proposals_and_refusals_arrive_after_earlier_messages() {
    let receiver = LocalIdentity {
        cluster_id: 7,
        member_id: 2,
    };
    let (addr, mut received) = serve_member(receiver).await;
    let (transport, _sender_events_rx) = sender(7, 1);
    transport.set_peer(2, vec![format!("http://{addr}")]);

    transport.send(vec![append(1, 2, 1)], &mut Vec::new());
    let proposals = vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")];
    assert!(transport.forward(2, proposals.clone()));
    transport.refuse(2, vec![41, 42]);
    assert!(
        !transport.forward(9, proposals.clone()),
        "a proposal for an unknown peer is reported as not sent"
    );

    let mut events = Vec::new();
    while events.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), received.recv_peer_event()).await {
            Ok(Some(PeerEvent::Unreachable(_))) => {}
            Ok(Some(event)) => events.push(event),
            Ok(None) | Err(_) => panic!("only {} of 3 events arrived: {events:?}", events.len()),
        }
    }
    assert!(
        matches!(&events[0], PeerEvent::Received(message) if *message == append(1, 2, 1)),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], PeerEvent::Forwarded { from: 1, proposals: got } if *got == proposals),
        "{events:?}"
    );
    assert!(
        matches!(&events[2], PeerEvent::Refused { request_ids } if *request_ids == [41, 42]),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_member_of_another_cluster_is_refused() {
    let receiver = LocalIdentity {
        cluster_id: 7,
        member_id: 2,
    };
    let (addr, mut received) = serve_member(receiver).await;
    let (stranger, mut sender_events_rx) = sender(8, 1);
    stranger.set_peer(2, vec![format!("http://{addr}")]);
    stranger.send(vec![append(1, 2, 1)], &mut Vec::new());

    let unreachable = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(PeerEvent::Unreachable(2)) = sender_events_rx.recv_peer_event().await {
                return;
            }
        }
    })
    .await;
    assert!(
        unreachable.is_ok(),
        "the refused sender must learn the peer is unreachable"
    );
    assert!(
        received.try_recv_peer_event().is_none(),
        "no message of another cluster may reach Raft"
    );
}

/// A peer address that accepts TCP connections but never admits a stream
/// (a proxy in front of a dead member) must be retried with growing
/// backoff, not every 50 ms.
#[tokio::test]
async fn a_peer_that_accepts_tcp_but_no_stream_is_retried_with_backoff() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let (transport, _sender_events_rx) = sender(7, 1);
    let started = std::time::Instant::now();
    transport.set_peer(2, vec![format!("http://{addr}")]);
    let deadline = started + Duration::from_secs(10);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "the transport stopped retrying the peer"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // An attempt makes two TCP connections (the connect, then the call's
    // own reconnect). With backoff 50, 100, 200 ms between attempts, the
    // fourth comes 350 ms after the first at the earliest; a backoff reset
    // by every TCP connect brings it within ~150 ms.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "four connection attempts (8 connections) within {elapsed:?}"
    );
    transport.remove_peer(2);
}

/// Writes forwarded to a peer that cannot be reached come back as never
/// sent (so the node fails them at once instead of at their timeout).
#[tokio::test]
async fn proposals_for_an_unreachable_peer_come_back_undelivered() {
    // A port nobody listens on: bind, note it, close.
    let unused = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
        .local_addr()
        .expect("local addr");
    let (transport, mut sender_events_rx) = sender(7, 1);
    transport.set_peer(2, vec![format!("http://{unused}")]);
    let proposals = vec![Bytes::from_static(b"lost")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The first frame may be queued before the stream task notices the
    // peer is down; it comes back either way.
    assert!(transport.forward(2, proposals.clone()));
    loop {
        match tokio::time::timeout_at(deadline, sender_events_rx.recv_peer_event()).await {
            Ok(Some(PeerEvent::NotDelivered { proposals: back })) => {
                assert_eq!(back, proposals);
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the undelivered proposals never came back"),
        }
    }
    transport.remove_peer(2);
}
