//! Found by the adversarial review of the replicated member registry (issue 11 item 5).

use bytes::Bytes;
use raft::{ConfChange, ConfChangeKind, Entry, EntryKind};
use server::node::StateMachine;
use server::state::{KvStateMachine, SharedState};

fn add_voter(index: u64, node_id: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::ConfChange,
        data: ConfChange {
            change: ConfChangeKind::AddVoter,
            node_id,
            context: Bytes::new(),
        }
        .encode(),
    }
}

/// FINDING (low, etcd compatibility). etcd's bootstrap conf changes carry
/// each initial member (its peer URLs) in their context, so `member list`
/// shows a member that has not started yet with its peer URLs (status
/// "unstarted"). Here the bootstrap entries carry ids only, so until a
/// member's own publish is applied the registry, and `MemberList` on every
/// member, shows it with no peer URLs at all; a member that never comes up
/// is listed as `{id, "", [], []}` forever. (Before the change, the URLs
/// came from each member's --initial-cluster.)
#[test]
#[ignore = "issue 14: bootstrap conf changes must carry the initial members' peer URLs (identical on every member); until then MemberList shows them after each publishes"]
fn an_initial_member_that_has_not_published_is_listed_with_its_peer_urls() {
    let state = SharedState::new();
    let mut machine = KvStateMachine::new(state.clone(), None).expect("state machine");
    for (index, id) in [(1u64, 10u64), (2, 20), (3, 30)] {
        machine
            .apply_conf_change(&add_voter(index, id))
            .expect("apply bootstrap entry");
    }
    let registry = state.read().expect("state").members.clone();
    let unlisted: Vec<u64> = registry
        .iter()
        .filter(|(_, member)| member.peer_urls.is_empty())
        .map(|(id, _)| *id)
        .collect();
    assert!(
        unlisted.is_empty(),
        "after the bootstrap entries, members {unlisted:?} have no peer URLs in the registry \
         (etcd lists every initial member's peer URLs from the start)"
    );
}
