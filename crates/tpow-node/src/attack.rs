//! The hostile peer behind the `tpow-attack` test binary (feature `attack`,
//! enabled only by this crate's tests): it plays a peer against a running node
//! so the tests can prove what forged data costs it (docs/SECURITY.md). Never
//! compiled into a node.
//!
//! Each round connects with a fresh key (a new identity costs an attacker
//! nothing), attacks until the node disconnects it or the round's time is up,
//! and reports one line per round.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, Multiaddr};
use tpow_core::body::Body;
use tpow_core::puzzle::pow_hash;
use tpow_core::target::hash_meets_target;
use tpow_core::{ChainParams, Header, HeaderChain};

use crate::p2p::{build_swarm, BehaviourEvent, NodeMeta};
use crate::wire::{self, GetBlocks};

/// What the attacker sends.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AttackKind {
    /// Bytes that do not decode as a block.
    Garbage,
    /// A well-formed block on genesis whose pow hash misses the target.
    BadPow,
    /// Children of genesis with the right bits and a pow hash ground to meet the
    /// target over a made-up output digest: cheap to make, a forward pass each if
    /// the node verified them.
    ForgedChildren,
    /// A sync answer extending the node's own tip by headers whose pow hashes
    /// meet the target over made-up digests: every cheap check passes and the
    /// branch claims more work than the node's chain.
    ForgedBatch,
    /// Nothing: connect and hold the connection (run many rounds with
    /// `--parallel` to try to fill the node's inbound slots).
    Occupy,
}

/// Headers in a forged sync answer.
const FORGED_BATCH_LEN: usize = 40;

/// Runs `rounds` rounds against `peer` (see the module docs), one after the
/// other or all at once (`parallel`). Returns how many rounds ended with the node
/// disconnecting (or refusing) the attacker.
pub async fn run(
    peer: Multiaddr,
    params: &ChainParams,
    kind: AttackKind,
    rounds: u32,
    per_round: Duration,
    parallel: bool,
) -> Result<u32> {
    let outcomes: Vec<Outcome> = if parallel {
        let all = (0..rounds).map(|_| one_round(&peer, params, kind, per_round));
        futures::future::join_all(all).await.into_iter().collect::<Result<_>>()?
    } else {
        let mut v = Vec::new();
        for _ in 0..rounds {
            v.push(one_round(&peer, params, kind, per_round).await?);
        }
        v
    };
    for (round, outcome) in outcomes.iter().enumerate() {
        println!("round {round}: {outcome:?}");
    }
    Ok(outcomes.iter().filter(|o| **o != Outcome::StillConnected).count() as u32)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Disconnected after the attack began.
    Disconnected,
    /// Never got a connection that lasted (refused at the door).
    Refused,
    /// The round's time ran out.
    StillConnected,
}

async fn one_round(peer: &Multiaddr, params: &ChainParams, kind: AttackKind, duration: Duration) -> Result<Outcome> {
    let keypair = identity::Keypair::generate_ed25519();
    let mut chain = HeaderChain::new(params.clone())?;
    let genesis_id = chain.tip().id;
    let (mut swarm, topic) = build_swarm(&keypair, params.name(), &genesis_id)?;
    swarm.dial(peer.clone()).with_context(|| format!("dialling {peer}"))?;
    let deadline = tokio::time::Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut subscribed = false;
    let mut connected = false;
    let mut nonce = 0u64;
    let mut forged: Option<Vec<(Header, Body)>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(if connected { Outcome::StillConnected } else { Outcome::Refused });
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    connected = true;
                    if matches!(kind, AttackKind::ForgedBatch) {
                        // Learn the node's chain first: ask from genesis.
                        let req = GetBlocks { locator: vec![genesis_id], max: wire::MAX_BLOCKS_PER_RESPONSE as u16 };
                        swarm.behaviour_mut().sync.send_request(&peer_id, req.encode());
                    }
                }
                SwarmEvent::OutgoingConnectionError { .. } => return Ok(Outcome::Refused),
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { .. })) => subscribed = true,
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                    return Ok(if subscribed || forged.is_some() { Outcome::Disconnected } else { Outcome::Refused });
                }
                // Answered like an honest peer: a ban must come from the attack under
                // test, not from a metadata request left unanswered (which the node
                // also bans for, and which would race the attack).
                SwarmEvent::Behaviour(BehaviourEvent::Meta(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                })) => {
                    let _ = swarm.behaviour_mut().meta.send_response(channel, NodeMeta::default().encode());
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { message, .. })) => {
                    match message {
                        request_response::Message::Response { response, .. } => {
                            // The node's chain, trusted as it is (we only extend it).
                            for (h, _) in wire::decode_blocks(&response).unwrap_or_default() {
                                if let Ok(p) = chain.precheck(&h, u64::MAX) {
                                    if let Ok(v) = p.complete(&h.output_digest) {
                                        let _ = chain.insert(v);
                                    }
                                }
                            }
                            forged = Some(forge_extension(&chain, FORGED_BATCH_LEN));
                        }
                        request_response::Message::Request { channel, .. } => {
                            // The node asks us to sync: answer with the forgery.
                            let blocks: Vec<(Header, Vec<u8>)> = forged
                                .iter()
                                .flatten()
                                .map(|(h, b)| (*h, b.encode()))
                                .collect();
                            let _ = swarm.behaviour_mut().sync.send_response(channel, wire::encode_blocks(&blocks));
                        }
                    }
                }
                _ => {}
            },
            _ = tick.tick(), if subscribed => {
                nonce += 1;
                let data = match kind {
                    AttackKind::Garbage => vec![0xa5; 300],
                    AttackKind::BadPow => {
                        let body = Body::coinbase_only(1, [7; 32]);
                        // The right template with a made-up digest: every check but
                        // the proof of work passes.
                        let template = chain.next_template([7; 32], body.root(), crate::time::now_ms());
                        let h = Header { nonce, output_digest: [0xff; 32], ..template };
                        wire::encode_block(&h, &body)
                    }
                    AttackKind::ForgedChildren => {
                        let genesis = chain.at_height(0).map(|e| e.id).unwrap_or(genesis_id);
                        let body = Body::coinbase_only(1, [nonce as u8; 32]);
                        let template = chain
                            .template_on(&genesis, [nonce as u8; 32], body.root(), crate::time::now_ms())
                            .context("genesis template")?;
                        wire::encode_block(&grind(template, nonce), &body)
                    }
                    // Sync answers are the attack, or holding the slot is.
                    AttackKind::ForgedBatch | AttackKind::Occupy => continue,
                };
                let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), data);
            }
        }
    }
}

/// A header whose pow hash meets its own target over a made-up digest: BLAKE3
/// calls only, no forward pass.
fn grind(template: Header, salt: u64) -> Header {
    let target = template.bits.to_target().unwrap_or_default();
    let digest = *blake3::hash(&salt.to_le_bytes()).as_bytes();
    let t = template.template();
    let mut nonce = salt << 32;
    while !hash_meets_target(&pow_hash(&t, nonce, &digest), &target) {
        nonce += 1;
    }
    Header { nonce, output_digest: digest, ..template }
}

/// `n` headers on `chain`'s tip, each one second after the last, with ground pow
/// hashes and made-up digests.
fn forge_extension(chain: &HeaderChain, n: usize) -> Vec<(Header, Body)> {
    let mut scratch = chain.clone();
    let mut out = Vec::with_capacity(n);
    let start = crate::time::now_ms();
    for i in 0..n {
        let tip = scratch.tip().clone();
        let body = Body::coinbase_only(tip.header.height + 1, [9; 32]);
        // 20 ms apart from now: inside every node's allowed clock drift.
        let t = scratch.next_template([9; 32], body.root(), start + 20 * i as u64);
        let h = grind(t, i as u64 + 1);
        // Trusted into the scratch chain so the next header links to it.
        if let Ok(p) = scratch.precheck(&h, u64::MAX) {
            if let Ok(v) = p.complete(&h.output_digest) {
                let _ = scratch.insert(v);
            }
        }
        out.push((h, body));
    }
    out
}
