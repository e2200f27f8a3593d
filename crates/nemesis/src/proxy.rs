//! The fault-injecting peer proxy: one TCP proxy in front of each member's
//! peer port, all sharing one set of [`Rules`] (the [`Network`]).
//!
//! Every member sends its peer traffic from its own loopback address (the
//! server binds outbound peer connections to its first --listen-peer-urls
//! address) and addresses every peer through that peer's proxy. The proxy
//! for member `to` therefore knows the sender of each accepted connection
//! by its source address, and can refuse, cut or blackhole the traffic of
//! chosen (sender, receiver) pairs: a connection from `from` to `to`
//! carries `from`'s requests and the answers to them, so blocking the pair
//! silences that direction of the conversation only (a one-way partition);
//! blocking both pairs is a symmetric partition.
//!
//! While a pair is blocked:
//! * [`BlockMode::Cut`]: existing connections are closed at once and new
//!   ones are closed as soon as they are accepted (a refused route).
//! * [`BlockMode::Blackhole`]: existing connections stay open but no byte
//!   moves; new connections are accepted and then hang. This is closer to a
//!   real partition (nobody learns anything until timeouts fire); when the
//!   block lifts, the held bytes flow on, as TCP would deliver them after a
//!   healed link.
//!
//! The proxy must never alter, reorder or invent bytes, and must never
//! listen on anything but loopback. Connections from unknown source
//! addresses are forwarded untouched (nothing to block them by).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How blocked traffic is treated; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockMode {
    #[default]
    Cut,
    Blackhole,
}

impl BlockMode {
    pub fn name(self) -> &'static str {
        match self {
            BlockMode::Cut => "cut",
            BlockMode::Blackhole => "blackhole",
        }
    }
}

/// Which (sender, receiver) pairs of member positions are blocked, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub blocked: BTreeSet<(usize, usize)>,
    pub mode: BlockMode,
}

impl Rules {
    pub fn blocks(&self, from: usize, to: usize) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Blocks both directions between every member of `a` and every member
    /// of `b`.
    pub fn split(a: &[usize], b: &[usize], mode: BlockMode) -> Rules {
        let mut rules = Rules {
            blocked: BTreeSet::new(),
            mode,
        };
        for &x in a {
            for &y in b {
                rules.blocked.insert((x, y));
                rules.blocked.insert((y, x));
            }
        }
        rules
    }

    /// Blocks only traffic from every member of `from` to every member of
    /// `to`.
    pub fn one_way(from: &[usize], to: &[usize], mode: BlockMode) -> Rules {
        let blocked = from
            .iter()
            .flat_map(|&x| to.iter().map(move |&y| (x, y)))
            .collect();
        Rules { blocked, mode }
    }
}

/// The shared rules every proxy obeys.
#[derive(Debug)]
pub struct Network {
    rules: watch::Sender<Rules>,
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

impl Network {
    pub fn new() -> Network {
        Network {
            rules: watch::Sender::new(Rules::default()),
        }
    }

    pub fn set(&self, rules: Rules) {
        self.rules.send_replace(rules);
    }

    /// Lifts every block.
    pub fn heal(&self) {
        self.set(Rules::default());
    }

    pub fn rules(&self) -> Rules {
        self.rules.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Rules> {
        self.rules.subscribe()
    }
}

/// A running proxy; dropping it stops it and closes its connections.
pub struct PeerProxy {
    pub listen: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet), so
        // aborting it drops them all.
        self.task.abort();
    }
}

impl PeerProxy {
    /// Listens on `listen` (port 0: any free port, see
    /// [`PeerProxy::listen`]) and forwards to member `to` at `target`.
    /// `senders` maps source addresses to member positions. Must be called
    /// within a Tokio runtime.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        to: usize,
        senders: HashMap<IpAddr, usize>,
        network: &Network,
    ) -> io::Result<PeerProxy> {
        assert!(
            listen.ip().is_loopback(),
            "the proxy listens on loopback only"
        );
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let rules = network.subscribe();
        let task = tokio::spawn(accept_loop(listener, target, to, senders, rules));
        Ok(PeerProxy { listen, task })
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    to: usize,
    senders: HashMap<IpAddr, usize>,
    rules: watch::Receiver<Rules>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, source)) => {
                    let route = Route { from: senders.get(&source.ip()).copied(), to };
                    connections.spawn(serve(socket, target, route, rules.clone()));
                }
                // Out of file descriptors or similar: back off rather than spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            },
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[derive(Clone, Copy)]
struct Route {
    from: Option<usize>,
    to: usize,
}

impl Route {
    fn blocked(self, rules: &Rules) -> Option<BlockMode> {
        let from = self.from?;
        rules.blocks(from, self.to).then_some(rules.mode)
    }
}

/// Waits until the route is open. `false`: the route is cut, close.
async fn gate(route: Route, rules: &mut watch::Receiver<Rules>) -> bool {
    loop {
        let blocked = route.blocked(&rules.borrow_and_update());
        match blocked {
            None => return true,
            Some(BlockMode::Cut) => return false,
            Some(BlockMode::Blackhole) => {
                if rules.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Resolves when the route becomes cut (or the network is gone).
async fn cut_signal(route: Route, mut rules: watch::Receiver<Rules>) {
    loop {
        if rules.changed().await.is_err() {
            return;
        }
        if route.blocked(&rules.borrow_and_update()) == Some(BlockMode::Cut) {
            return;
        }
    }
}

async fn serve(
    mut inbound: TcpStream,
    target: SocketAddr,
    route: Route,
    mut rules: watch::Receiver<Rules>,
) {
    // Admission: a cut route closes the connection at once; a blackholed
    // one holds it, unanswered, until the block lifts.
    if !gate(route, &mut rules).await {
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        // The member is down: closing is what the sender would see anyway.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.split();
    let (outbound_read, outbound_write) = outbound.split();
    tokio::select! {
        _ = pump(inbound_read, outbound_write, route, rules.clone()) => {}
        _ = pump(outbound_read, inbound_write, route, rules.clone()) => {}
        _ = cut_signal(route, rules) => {}
    }
    // Returning drops both sockets: either side's end, or a cut, closes the
    // whole connection.
}

/// Copies one direction, holding bytes while the route is blackholed.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    route: Route,
    mut rules: watch::Receiver<Rules>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !gate(route, &mut rules).await {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // The block may have begun while the read was pending: hold what
        // was read until it lifts.
        if !gate(route, &mut rules).await {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An echo server on 127.0.0.1; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let address = listener.local_addr().expect("echo address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn connect_from(source: IpAddr, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind source");
        socket.connect(to).await.expect("connect to proxy")
    }

    /// Sends a byte and says whether it came back within 300 ms. `None`:
    /// the connection is closed.
    async fn round_trip(stream: &mut TcpStream) -> Option<bool> {
        if stream.write_all(b"x").await.is_err() {
            return None;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
            Err(_) => Some(false),
            Ok(Ok(1)) => Some(true),
            Ok(_) => None,
        }
    }

    #[tokio::test]
    async fn blocks_by_source_address_cut_and_blackhole() {
        let echo = echo_server().await;
        let network = Network::new();
        let sender: IpAddr = "127.77.1.1".parse().expect("ip");
        let other: IpAddr = "127.77.1.2".parse().expect("ip");
        let senders = HashMap::from([(sender, 0), (other, 2)]);
        let proxy = PeerProxy::start(
            "127.77.2.2:0".parse().expect("addr"),
            echo,
            1,
            senders,
            &network,
        )
        .await
        .expect("proxy starts");

        let mut a = connect_from(sender, proxy.listen).await;
        let mut b = connect_from(other, proxy.listen).await;
        assert_eq!(round_trip(&mut a).await, Some(true));
        assert_eq!(round_trip(&mut b).await, Some(true));

        // One-way block 0 -> 1, cut: the existing connection closes, new
        // ones are closed, the other sender is untouched.
        network.set(Rules::one_way(&[0], &[1], BlockMode::Cut));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut a).await, None);
        let mut a = connect_from(sender, proxy.listen).await;
        assert_eq!(round_trip(&mut a).await, None);
        assert_eq!(round_trip(&mut b).await, Some(true));

        // Blackhole: new connections hang, and deliver once healed.
        network.set(Rules::one_way(&[0], &[1], BlockMode::Blackhole));
        let mut a = connect_from(sender, proxy.listen).await;
        assert_eq!(round_trip(&mut a).await, Some(false));
        network.heal();
        let mut byte = [0u8; 1];
        let echoed = tokio::time::timeout(Duration::from_secs(2), a.read(&mut byte)).await;
        assert!(
            matches!(echoed, Ok(Ok(1))),
            "held byte delivered after heal"
        );
        assert_eq!(round_trip(&mut a).await, Some(true));

        // Blackhole of an existing connection: bytes are held, not lost.
        network.set(Rules::split(&[0], &[1], BlockMode::Blackhole));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut a).await, Some(false));
        network.heal();
        let echoed = tokio::time::timeout(Duration::from_secs(2), a.read(&mut byte)).await;
        assert!(
            matches!(echoed, Ok(Ok(1))),
            "held byte delivered after heal"
        );
    }
}
