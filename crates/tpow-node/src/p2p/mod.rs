//! The peer-to-peer layer (rust-libp2p): TCP + noise + yamux; gossipsub carries
//! new blocks, a request-response protocol serves sync, another one exchanges
//! discovery metadata (models, HTTP port; `discovery`), identify names peers.
//!
//! Sync is pull-based: on connecting, on every tick and whenever a gossiped
//! block has an unknown parent, ask the peer for the blocks after our locator
//! (at most [`wire::MAX_BLOCKS_PER_RESPONSE`]). Initial sync is a pipeline: a
//! full answer goes to the chain service's sync lane and the next request
//! (the blocks after that answer's last one) leaves at once, to the next
//! connected peer in turn, so answers are fetched from several peers while the
//! forward passes of earlier ones run on every core; the lane commits them in
//! order. Per peer: one request in flight at a time, at most
//! [`SYNC_PIPELINE`] answers waiting in the lane (also capped per source by
//! the lane), and gossip bounded by [`GOSSIP_PER_PEER`] and
//! [`GOSSIP_IN_FLIGHT_PER_PEER`]; so one fast or hostile peer spends its own
//! budget, not the others'.
//!
//! Gossip uses manual validation: a block is forwarded only after the chain
//! service has verified and stored it, so an invalid block dies at the first
//! honest node, and its forwarder is the peer to blame. Peers that send bytes
//! that do not decode, blocks with an invalid proof of work, or a wrong digest are
//! disconnected and banned for [`BAN_DURATION`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    allow_block_list, connection_limits, identify, identity, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol,
    Swarm,
};
use tokio::sync::{mpsc, watch};
use tpow_core::body::Body;
use tpow_core::{BlockId, Header};

use crate::chain_state::Verdict;
use crate::limits::{ip_key, Buckets, ConnectionCounts, PeerBudget, Rate};
use crate::service::{ChainHandle, SubmitResult};
use crate::wire::{self, GetBlocks};

mod codec;
mod discovery;

pub(crate) use codec::FrameCodec;
pub use discovery::{agent_version, MetaError, NodeMeta};

/// How long a misbehaving peer stays banned.
pub const BAN_DURATION: Duration = Duration::from_secs(600);
/// Inbound connections allowed from one IP address (a fresh key per connection
/// gains nothing beyond this). Connections this node dials are not counted: they
/// are its reserved slots for configured and known-good peers.
pub const MAX_INBOUND_PER_IP: usize = 4;
/// Inbound connections allowed in all.
pub const MAX_INBOUND: usize = 128;
/// Peers banned from one IP address within [`BAN_DURATION`] before the address
/// itself is banned (new keys from it are then refused at connection time).
pub const IP_STRIKES: u32 = 3;
/// Sync requests one IP address may make per second (burst 40); beyond, the
/// answer is empty. 20 answers of 500 blocks is 10,000 blocks/s (about 3 MB/s)
/// per address: what a pipelined initial sync can use, and a syncing node
/// fetching from several peers gets this from each.
pub const SYNC_REQUESTS_PER_IP: Rate = Rate { per_sec: 20.0, burst: 40.0 };
/// Gossip messages one peer may hand to the chain service per second (burst
/// 40): a devnet produces one block per 2 s, so honest peers stay far below.
pub const GOSSIP_PER_PEER: Rate = Rate { per_sec: 10.0, burst: 40.0 };
/// Gossip messages of one peer being verified at once; beyond, its messages
/// are ignored (not forwarded) without any check.
pub const GOSSIP_IN_FLIGHT_PER_PEER: usize = 8;
/// Sync answers submitted and not yet applied, in all: the pipeline's depth
/// (the lane caps one source at fewer, see `service::LaneLimits`).
pub const SYNC_PIPELINE: usize = 48;
/// Metadata requests answered per peer connection.
const MAX_META_ANSWERS: u8 = 4;
/// How often idle peers are polled for new blocks and bootstrap peers redialled.
const TICK: Duration = Duration::from_secs(3);
/// A configured peer that is not connected is dialled again at most this often
/// (a dial in progress is not doubled: each one would take an inbound slot there).
const REDIAL_AFTER: Duration = Duration::from_secs(10);

/// A connected peer, as shown by `GET /api/peers`.
pub use tpow_api::Peer as PeerInfo;

/// Network settings.
pub struct P2pConfig {
    /// Our identity.
    pub keypair: identity::Keypair,
    /// Where to listen.
    pub listen: Multiaddr,
    /// Peers to dial and keep dialling.
    pub bootstrap: Vec<Multiaddr>,
    /// Chain name and genesis id: they name the protocols, so nodes of different
    /// chains never exchange blocks.
    pub chain_name: String,
    /// Genesis id.
    pub genesis_id: BlockId,
    /// Where to write the actual listen address (`p2p-addr`), for scripts and tests.
    pub data_dir: PathBuf,
    /// What we tell peers about ourselves (models, HTTP port).
    pub meta: NodeMeta,
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::Behaviour<FrameCodec>,
    pub(crate) meta: request_response::Behaviour<FrameCodec>,
    identify: identify::Behaviour,
}

/// Results of work spawned off the event loop, fed back into it.
enum Internal {
    Gossip { id: MessageId, source: PeerId, result: Option<SubmitResult> },
    Respond { channel: ResponseChannel<Vec<u8>>, bytes: Vec<u8> },
    SendSync { peer: PeerId, locator: Vec<BlockId> },
    Synced { peer: PeerId, received: usize, result: Option<SubmitResult> },
}

/// The sync pipeline's state (see the module docs).
#[derive(Default)]
struct Pipeline {
    /// Answers submitted to the lane and not yet applied.
    outstanding: usize,
    /// Last id of a full answer whose follow-up request is still to send.
    next: Option<BlockId>,
    /// Ids already asked to continue from (two peers answering the same range
    /// must not start two identical streams); bounded.
    asked: VecDeque<BlockId>,
    /// Rotation over peers.
    turn: usize,
}

#[derive(Default)]
struct PeerState {
    address: String,
    ip: Option<IpAddr>,
    outbound: bool,
    agent: Option<String>,
    blocks_received: u64,
    sync_in_flight: bool,
    gossip: Option<PeerBudget>,
    /// From its metadata answer.
    meta: NodeMeta,
    /// Metadata requests it made on this connection (a few are answered).
    meta_served: u8,
}

impl PeerState {
    fn gossip_budget(&mut self, now: Instant) -> &mut PeerBudget {
        self.gossip.get_or_insert_with(|| PeerBudget::new(GOSSIP_PER_PEER, GOSSIP_IN_FLIGHT_PER_PEER, now))
    }
}

struct Net {
    swarm: Swarm<Behaviour>,
    chain: ChainHandle,
    topic: IdentTopic,
    peers: HashMap<PeerId, PeerState>,
    bans: HashMap<PeerId, Instant>,
    /// Per IP: strikes (peers banned) and when the count resets.
    strikes: HashMap<IpAddr, (u32, Instant)>,
    ip_bans: HashMap<IpAddr, Instant>,
    inbound: ConnectionCounts,
    inbound_ips: HashMap<libp2p::swarm::ConnectionId, IpAddr>,
    sync_served: Buckets<IpAddr>,
    pending_sync: HashMap<OutboundRequestId, PeerId>,
    internal: mpsc::UnboundedSender<Internal>,
    peers_tx: watch::Sender<Vec<PeerInfo>>,
    bootstrap: Vec<Multiaddr>,
    /// When each configured address (without `/p2p/…`) was last dialled.
    last_dial: HashMap<Multiaddr, Instant>,
    /// Which peer answered a dial of each configured address.
    dialled_peers: HashMap<Multiaddr, PeerId>,
    data_dir: PathBuf,
    progress: Progress,
    pipeline: Pipeline,
    /// Our encoded [`NodeMeta`], the answer to every metadata request.
    meta: Vec<u8>,
}

/// Rate-limited sync progress line.
struct Progress {
    last: Instant,
    blocks: u64,
}

/// The swarm every tpow node runs, subscribed to the block topic of the chain.
pub(crate) fn build_swarm(
    keypair: &identity::Keypair,
    chain_name: &str,
    genesis_id: &BlockId,
) -> Result<(Swarm<Behaviour>, IdentTopic)> {
    let genesis = hex::encode(&genesis_id[..8]);
    let topic = IdentTopic::new(format!("/tpow/{}/{genesis}/blocks/1", chain_name));
    let sync_protocol = StreamProtocol::try_from_owned(format!("/tpow/{}/{genesis}/sync/1", chain_name))
        .context("sync protocol name")?;
    // Not chain-scoped: which node serves which model is news across devnets too.
    let meta_protocol = StreamProtocol::new("/tpow/meta/1");
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .context("tcp transport")?
        .with_behaviour(|key| {
            let gossip_cfg = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(wire::MAX_GOSSIP_BYTES)
                .heartbeat_interval(Duration::from_millis(500))
                // Dedupe by content: the same block from two miners' neighbours is one message.
                .message_id_fn(|m| MessageId::from(blake3::hash(&m.data).as_bytes().to_vec()))
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_cfg)?;
            let sync = request_response::Behaviour::with_codec(
                FrameCodec::sync(),
                [(sync_protocol, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            );
            let meta = request_response::Behaviour::with_codec(
                FrameCodec::meta(),
                [(meta_protocol, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            );
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(2))
                .with_max_established_incoming(Some(MAX_INBOUND as u32));
            Ok(Behaviour {
                blocked: Default::default(),
                limits: connection_limits::Behaviour::new(limits),
                gossipsub,
                sync,
                meta,
                identify: identify::Behaviour::new(
                    identify::Config::new("/tpow/1.0.0".into(), key.public()).with_agent_version(agent_version()),
                ),
            })
        })
        .map_err(|e| anyhow::anyhow!("building the network behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm.behaviour_mut().gossipsub.subscribe(&topic).context("subscribing to the block topic")?;
    Ok((swarm, topic))
}

/// The IP address of a multiaddr, if it has one.
fn multiaddr_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The address without its `/p2p/<peer id>` part: what a dial reports back.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

/// Builds the swarm and runs the network until the chain service stops.
/// `publish` carries blocks this node produced (miner, HTTP work).
pub async fn run(
    cfg: P2pConfig,
    chain: ChainHandle,
    mut publish: mpsc::Receiver<(Header, Body)>,
    peers_tx: watch::Sender<Vec<PeerInfo>>,
) -> Result<()> {
    let (mut swarm, topic) = build_swarm(&cfg.keypair, &cfg.chain_name, &cfg.genesis_id)?;
    swarm.listen_on(cfg.listen.clone()).with_context(|| format!("listening on {}", cfg.listen))?;
    let mut last_dial = HashMap::new();
    for addr in &cfg.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!("dialling {addr}: {e}");
        }
        last_dial.insert(without_peer_id(addr), Instant::now());
    }
    let (internal, mut internal_rx) = mpsc::unbounded_channel();
    let mut net = Net {
        swarm,
        chain,
        topic,
        peers: HashMap::new(),
        bans: HashMap::new(),
        strikes: HashMap::new(),
        ip_bans: HashMap::new(),
        inbound: ConnectionCounts::new(MAX_INBOUND_PER_IP, MAX_INBOUND),
        inbound_ips: HashMap::new(),
        sync_served: Buckets::new(SYNC_REQUESTS_PER_IP, 4_096),
        pending_sync: HashMap::new(),
        internal,
        peers_tx,
        bootstrap: cfg.bootstrap,
        last_dial,
        dialled_peers: HashMap::new(),
        data_dir: cfg.data_dir,
        progress: Progress { last: Instant::now(), blocks: 0 },
        pipeline: Pipeline::default(),
        meta: cfg.meta.encode(),
    };
    // The first tick comes after one period: the configured peers were just dialled.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    loop {
        tokio::select! {
            ev = net.swarm.select_next_some() => net.on_swarm_event(ev),
            block = publish.recv() => match block {
                Some((h, b)) => net.publish(&h, &b),
                None => return Ok(()),
            },
            Some(msg) = internal_rx.recv() => net.on_internal(msg),
            _ = tick.tick() => net.on_tick(),
        }
    }
}

impl Net {
    fn publish(&mut self, header: &Header, body: &Body) {
        let data = wire::encode_block(header, body);
        match self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), data) {
            Ok(_) => {}
            // Alone on the network: nothing to do.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => tracing::debug!("publish: {e}"),
        }
    }

    fn ban(&mut self, peer: PeerId, why: &str) {
        tracing::warn!(%peer, "banning peer for {}s: {why}", BAN_DURATION.as_secs());
        let now = Instant::now();
        self.bans.insert(peer, now + BAN_DURATION);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        // A ban of a peer that dialled us counts against its address, so fresh
        // keys from the same host do not start from a clean slate.
        if let Some(PeerState { ip: Some(ip), outbound: false, .. }) = self.peers.get(&peer) {
            let ip = ip_key(*ip);
            let e = self.strikes.entry(ip).or_insert((0, now + BAN_DURATION));
            if e.1 <= now {
                *e = (0, now + BAN_DURATION);
            }
            e.0 += 1;
            if e.0 >= IP_STRIKES && self.ip_bans.len() < 65_536 {
                tracing::warn!(%ip, "banning address for {}s: {} peers from it misbehaved", BAN_DURATION.as_secs(), e.0);
                self.ip_bans.insert(ip, now + BAN_DURATION);
                let from_ip: Vec<libp2p::swarm::ConnectionId> =
                    self.inbound_ips.iter().filter(|(_, a)| ip_key(**a) == ip).map(|(c, _)| *c).collect();
                for c in from_ip {
                    self.swarm.close_connection(c);
                }
            }
        }
        self.peers.remove(&peer);
        self.publish_peers();
    }

    fn publish_peers(&self) {
        let mut list: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(id, p)| PeerInfo {
                peer_id: id.to_string(),
                address: p.address.clone(),
                outbound: p.outbound,
                agent: p.agent.clone(),
                models: p.meta.models.clone(),
                http_port: p.meta.http_port,
                blocks_received: p.blocks_received,
            })
            .collect();
        list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        self.peers_tx.send_replace(list);
    }

    fn request_sync(&mut self, peer: PeerId) {
        self.request_sync_after(peer, None);
    }

    /// Asks `peer` for the blocks after `after` (a block we have not applied
    /// yet, the end of an answer in the pipeline), or after our best chain.
    fn request_sync_after(&mut self, peer: PeerId, after: Option<BlockId>) {
        let Some(state) = self.peers.get_mut(&peer) else { return };
        if state.sync_in_flight {
            return;
        }
        state.sync_in_flight = true;
        let chain = self.chain.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            if let Ok(mut locator) = chain.locator().await {
                if let Some(id) = after {
                    locator.insert(0, id);
                    locator.truncate(wire::MAX_LOCATOR);
                }
                let _ = internal.send(Internal::SendSync { peer, locator });
            }
        });
    }

    /// Sends the pipeline's next request, to the next peer in turn that has
    /// none in flight, unless the pipeline is full.
    fn continue_pipeline(&mut self) {
        let Some(after) = self.pipeline.next else { return };
        if self.pipeline.outstanding >= SYNC_PIPELINE {
            return;
        }
        let mut free: Vec<PeerId> = self.peers.iter().filter(|(_, p)| !p.sync_in_flight).map(|(id, _)| *id).collect();
        if free.is_empty() {
            return;
        }
        free.sort();
        self.pipeline.turn = self.pipeline.turn.wrapping_add(1);
        let peer = free[self.pipeline.turn % free.len()];
        self.pipeline.next = None;
        self.request_sync_after(peer, Some(after));
    }

    /// A sync answer arrived: into the lane, in arrival order, and the next
    /// request leaves at once if the answer was full.
    fn on_sync_answer(&mut self, peer: PeerId, blocks: Vec<(Header, Body)>) {
        let received = blocks.len();
        let full = received >= wire::MAX_BLOCKS_PER_RESPONSE;
        let last = blocks.last().map(|(h, _)| h.id());
        let source = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            peer.hash(&mut h);
            h.finish()
        };
        let Ok(rx) = self.chain.submit_sync(blocks, source, full) else {
            tracing::debug!(%peer, "chain service busy; sync answer dropped");
            return;
        };
        self.pipeline.outstanding += 1;
        if let (true, Some(last)) = (full, last) {
            if !self.pipeline.asked.contains(&last) {
                if self.pipeline.asked.len() >= 256 {
                    self.pipeline.asked.pop_front();
                }
                self.pipeline.asked.push_back(last);
                self.pipeline.next = Some(last);
                self.continue_pipeline();
            }
        }
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = rx.await.ok();
            let _ = internal.send(Internal::Synced { peer, received, result });
        });
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self.bans.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for p in expired {
            self.bans.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
        self.ip_bans.retain(|_, until| *until > now);
        self.strikes.retain(|_, (_, until)| *until > now);
        // Refresh the API's view (block counters change without connection events).
        self.publish_peers();
        // While the pipeline runs, it asks; polling would fetch the same range again.
        if self.pipeline.outstanding == 0 {
            let peers: Vec<PeerId> = self.peers.keys().copied().collect();
            for p in peers {
                self.request_sync(p);
            }
        }
        self.continue_pipeline();
        // Keep the configured peers connected (they may have restarted), one dial at a
        // time per address: a peer connected in either direction is not dialled again.
        for addr in self.bootstrap.clone() {
            let key = without_peer_id(&addr);
            let named = addr.iter().find_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            });
            let connected =
                named.into_iter().chain(self.dialled_peers.get(&key).copied()).any(|p| self.peers.contains_key(&p));
            let recent = self.last_dial.get(&key).is_some_and(|t| now.duration_since(*t) < REDIAL_AFTER);
            if !connected && !recent {
                self.last_dial.insert(key, now);
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Gossip { id, source, result } => {
                if let Some(b) = self.peers.get_mut(&source).and_then(|p| p.gossip.as_mut()) {
                    b.finish();
                }
                let acceptance = match &result {
                    Some(Ok(applied)) => match &applied.error {
                        None if applied.accepted > 0 => {
                            if let Some(p) = self.peers.get_mut(&source) {
                                p.blocks_received += 1;
                            }
                            MessageAcceptance::Accept
                        }
                        None => MessageAcceptance::Ignore,
                        Some(e) => self.judge(source, e),
                    },
                    Some(Err(e)) => self.judge(source, e),
                    None => MessageAcceptance::Ignore,
                };
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&id, &source, acceptance);
            }
            Internal::Respond { channel, bytes } => {
                // Fails only if the peer went away meanwhile.
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, bytes);
            }
            Internal::SendSync { peer, locator } => {
                if !self.swarm.is_connected(&peer) {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.sync_in_flight = false;
                    }
                    return;
                }
                let req = GetBlocks { locator, max: wire::MAX_BLOCKS_PER_RESPONSE as u16 };
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, req.encode());
                self.pending_sync.insert(id, peer);
            }
            Internal::Synced { peer, received, result } => {
                self.pipeline.outstanding = self.pipeline.outstanding.saturating_sub(1);
                let mut more = false;
                match result {
                    Some(Ok(applied)) => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.blocks_received += applied.accepted as u64;
                        }
                        self.progress.blocks += applied.accepted as u64;
                        if let Some(e) = &applied.error {
                            let _ = self.judge(peer, e);
                        } else {
                            // A full answer that taught us nothing (blocks we
                            // have) is not a reason to ask the same peer again.
                            more = received >= wire::MAX_BLOCKS_PER_RESPONSE && applied.accepted > 0;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = self.judge(peer, &e);
                    }
                    None => {}
                }
                let height = self.chain.tip().borrow().height;
                if more || self.progress.last.elapsed() >= Duration::from_secs(2) {
                    if self.progress.blocks > 0 {
                        let secs = self.progress.last.elapsed().as_secs_f64().max(1e-3);
                        tracing::info!(
                            "sync: height {height}, +{} blocks in {secs:.1}s ({:.0} blocks/s)",
                            self.progress.blocks,
                            self.progress.blocks as f64 / secs
                        );
                    }
                    self.progress = Progress { last: Instant::now(), blocks: 0 };
                }
                // The pipeline asks for what follows a full answer as soon as
                // it arrives; here only a drained pipeline restarts from our tip.
                if more && self.pipeline.outstanding == 0 && self.pipeline.next.is_none() {
                    self.request_sync(peer);
                }
                self.continue_pipeline();
            }
        }
    }

    /// Applies the verdict on a rejected block to its sender.
    fn judge(&mut self, peer: PeerId, e: &crate::chain_state::BlockError) -> MessageAcceptance {
        match e.verdict() {
            Verdict::Ban => {
                self.ban(peer, &e.to_string());
                MessageAcceptance::Reject
            }
            Verdict::NeedParent => {
                self.request_sync(peer);
                MessageAcceptance::Ignore
            }
            Verdict::Ignore => {
                tracing::debug!(%peer, "ignored block: {e}");
                MessageAcceptance::Ignore
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.clone().with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!("p2p listening on {full}");
                let path = self.data_dir.join("p2p-addr");
                if !path.exists() || address.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback())) {
                    if let Err(e) = std::fs::write(&path, address.to_string()) {
                        tracing::warn!("writing {}: {e}", path.display());
                    }
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, connection_id, .. } => {
                let ip = multiaddr_ip(endpoint.get_remote_address());
                if !endpoint.is_dialer() {
                    if let Some(ip) = ip {
                        let now = Instant::now();
                        let banned = self.ip_bans.get(&ip_key(ip)).is_some_and(|until| *until > now);
                        if banned || !self.inbound.try_open(ip) {
                            tracing::debug!(%ip, banned, "refusing inbound connection");
                            self.swarm.close_connection(connection_id);
                            return;
                        }
                        self.inbound_ips.insert(connection_id, ip);
                    }
                }
                if endpoint.is_dialer() {
                    let key = without_peer_id(endpoint.get_remote_address());
                    if self.last_dial.contains_key(&key) {
                        self.dialled_peers.insert(key, peer_id);
                    }
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.peers.insert(
                        peer_id,
                        PeerState {
                            address: endpoint.get_remote_address().to_string(),
                            ip,
                            outbound: endpoint.is_dialer(),
                            ..Default::default()
                        },
                    );
                    self.publish_peers();
                    self.swarm.behaviour_mut().meta.send_request(&peer_id, Vec::new());
                }
                self.request_sync(peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, connection_id, .. } => {
                if let Some(ip) = self.inbound_ips.remove(&connection_id) {
                    self.inbound.close(ip);
                }
                if num_established == 0 && self.peers.remove(&peer_id).is_some() {
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    self.publish_peers();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    // Bounded: the string comes from the peer.
                    p.agent = Some(info.agent_version.chars().take(1024).collect());
                    self.publish_peers();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => match wire::decode_block(&message.data) {
                Err(e) => {
                    self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Reject,
                    );
                    self.ban(propagation_source, &format!("undecodable gossip: {e}"));
                }
                Ok(block) => {
                    // The forwarder's own budget: over it, the message is dropped
                    // unchecked (not forwarded, not blamed).
                    let allowed = self
                        .peers
                        .get_mut(&propagation_source)
                        .is_some_and(|p| p.gossip_budget(Instant::now()).try_start(Instant::now()));
                    if !allowed {
                        tracing::debug!(peer = %propagation_source, "gossip over the peer's budget");
                        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Ignore,
                        );
                        return;
                    }
                    let chain = self.chain.clone();
                    let internal = self.internal.clone();
                    tokio::spawn(async move {
                        let result = chain.submit(vec![block]).await.ok();
                        let _ = internal.send(Internal::Gossip { id: message_id, source: propagation_source, result });
                    });
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. })) => {
                match message {
                    request_response::Message::Request { request, channel, .. } => match GetBlocks::decode(&request) {
                        Err(e) => self.ban(peer, &format!("undecodable sync request: {e}")),
                        Ok(req) => {
                            let chain = self.chain.clone();
                            let internal = self.internal.clone();
                            let ip = self.peers.get(&peer).and_then(|p| p.ip).map(ip_key);
                            let allowed = ip.is_none_or(|ip| self.sync_served.try_take(&ip, 1.0, Instant::now()));
                            // Over budget: an empty answer costs us nothing to make.
                            let max = if allowed { (req.max as usize).min(wire::MAX_BLOCKS_PER_RESPONSE) } else { 0 };
                            tokio::spawn(async move {
                                match chain.blocks_after(req.locator, max).await {
                                    Ok(Ok(blocks)) => {
                                        let bytes = wire::encode_blocks(&blocks);
                                        let _ = internal.send(Internal::Respond { channel, bytes });
                                    }
                                    Ok(Err(e)) => tracing::error!("serving sync: {e}"),
                                    Err(_) => {}
                                }
                            });
                        }
                    },
                    request_response::Message::Response { request_id, response } => {
                        self.pending_sync.remove(&request_id);
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.sync_in_flight = false;
                        }
                        match wire::decode_blocks(&response) {
                            Err(e) => {
                                self.ban(peer, &format!("undecodable sync response: {e}"));
                            }
                            Ok(blocks) if blocks.is_empty() => self.continue_pipeline(),
                            Ok(blocks) => self.on_sync_answer(peer, blocks),
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Meta(request_response::Event::Message { peer, message, .. })) => {
                match message {
                    request_response::Message::Request { channel, .. } => {
                        // A few answers per connection; a peer asking more gets none.
                        if let Some(p) = self.peers.get_mut(&peer) {
                            if p.meta_served < MAX_META_ANSWERS {
                                p.meta_served += 1;
                                let _ = self.swarm.behaviour_mut().meta.send_response(channel, self.meta.clone());
                            }
                        }
                    }
                    request_response::Message::Response { response, .. } => match NodeMeta::decode(&response) {
                        Ok(meta) => {
                            if let Some(p) = self.peers.get_mut(&peer) {
                                p.meta = meta;
                                self.publish_peers();
                            }
                        }
                        Err(e) => self.ban(peer, &format!("invalid discovery metadata: {e}")),
                    },
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Meta(request_response::Event::OutboundFailure {
                peer,
                error,
                ..
            })) => {
                tracing::debug!(%peer, "metadata request failed: {error}");
                // An answer over the cap or cut short is the peer's doing.
                if let request_response::OutboundFailure::Io(e) = &error {
                    if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) {
                        self.ban(peer, &format!("malformed metadata frame: {e}"));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            })) => {
                self.pending_sync.remove(&request_id);
                tracing::debug!(%peer, "sync request failed: {error}");
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.sync_in_flight = false;
                }
                self.continue_pipeline();
                // An answer over the size cap or cut short is the peer's doing.
                if let request_response::OutboundFailure::Io(e) = &error {
                    if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) {
                        self.ban(peer, &format!("malformed sync answer frame: {e}"));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::InboundFailure {
                peer,
                error,
                ..
            })) => {
                tracing::debug!(%peer, "inbound sync failed: {error}");
            }
            _ => {}
        }
    }
}
