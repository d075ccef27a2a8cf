//! The chain store: an embedded ACID database (redb).
//!
//! What is stored, and why this shape:
//! Headers and bodies are keyed by `height (u64 BE) ‖ id`, not by id alone: new
//! blocks then land at the right edge of the B-tree, so a commit rewrites a few
//! pages instead of pages all over the table (copy-on-write makes scattered keys
//! cost O(table) per batch, which showed as sync slowing down with height).
//!
//! - `headers`: key → (insertion sequence, 192-byte header). Every validated header
//!   on every branch. The sequence number lets a restart re-insert headers in the
//!   order they were first accepted, so the in-memory fork choice ("on a tie the
//!   tip seen first stays best") comes back exactly as it was.
//! - `bodies`: key → body encoding.
//! - `best`: height → id of the best chain (what the HTTP API and peers read).
//! - `meta`: small settings that must survive restarts (chain name, genesis time,
//!   node key).
//!
//! Each accepted batch of blocks is one write transaction; redb's default
//! durability fsyncs on commit, so whatever the node reported as accepted is on
//! disk, and a kill -9 at any other moment loses at most an unacknowledged batch.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tpow_core::header::{Header, HEADER_LEN};
use tpow_core::BlockId;

const HEADERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("headers");
const BODIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bodies");
const BEST: TableDefinition<u64, &[u8]> = TableDefinition::new("best");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, corruption, lock held by another process).
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A stored record does not parse: the file was damaged or written by
    /// incompatible software.
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

fn dbe<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// A new block to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRow {
    /// Insertion sequence number (see the module docs).
    pub seq: u64,
    /// The header.
    pub header: Header,
    /// Its id.
    pub id: BlockId,
    /// The encoded body.
    pub body: Vec<u8>,
}

/// A change of the best-chain index: heights `from..` get `ids`, and heights
/// above `from + ids.len() - 1` up to `old_height` are removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestUpdate {
    /// First height to (re)write.
    pub from: u64,
    /// Ids for heights `from, from + 1, ...`.
    pub ids: Vec<BlockId>,
    /// Best height before the update.
    pub old_height: u64,
}

/// Everything one accepted batch changes on disk, written in one transaction
/// by [`Store::commit`]: computed by `ChainState::apply` before memory changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitPlan {
    /// New blocks (any branch).
    pub blocks: Vec<NewRow>,
    /// The best-chain index change, if the tip moved.
    pub best: Option<BestUpdate>,
    /// Side blocks `(height, id)` to delete (pruned from memory).
    pub pruned: Vec<(u64, BlockId)>,
}

impl CommitPlan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.best.is_none() && self.pruned.is_empty()
    }
}

/// The open database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database file and its tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(dbe)?;
        let txn = db.begin_write().map_err(dbe)?;
        {
            txn.open_table(HEADERS).map_err(dbe)?;
            txn.open_table(BODIES).map_err(dbe)?;
            txn.open_table(BEST).map_err(dbe)?;
            txn.open_table(META).map_err(dbe)?;
        }
        txn.commit().map_err(dbe)?;
        Ok(Store { db })
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(dbe)?;
        let t = txn.open_table(META).map_err(dbe)?;
        Ok(t.get(key).map_err(dbe)?.map(|v| v.value().to_vec()))
    }

    /// Sets a metadata value (committed before returning).
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(dbe)?;
        txn.open_table(META).map_err(dbe)?.insert(key, value).map_err(dbe)?;
        txn.commit().map_err(dbe)?;
        Ok(())
    }

    /// What a restart rebuilds the chain from: every header and the best index.
    pub fn load(&self) -> Result<crate::chain_state::Stored, StoreError> {
        Ok(crate::chain_state::Stored { headers: self.load_headers()?, best: self.best_ids()? })
    }

    /// Every stored header with its sequence number, in sequence order.
    pub fn load_headers(&self) -> Result<Vec<(u64, Header)>, StoreError> {
        let txn = self.db.begin_read().map_err(dbe)?;
        let t = txn.open_table(HEADERS).map_err(dbe)?;
        let mut out = Vec::with_capacity(t.len().map_err(dbe)? as usize);
        for row in t.iter().map_err(dbe)? {
            let (_, v) = row.map_err(dbe)?;
            let v = v.value();
            if v.len() != 8 + HEADER_LEN {
                return Err(corrupt("headers", format!("record of {} bytes", v.len())));
            }
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&v[..8]);
            let header = Header::decode(&v[8..]).map_err(|e| corrupt("headers", e.to_string()))?;
            out.push((u64::from_le_bytes(seq), header));
        }
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out)
    }

    /// The stored best-chain index, from height 0 up.
    pub fn best_ids(&self) -> Result<Vec<BlockId>, StoreError> {
        let txn = self.db.begin_read().map_err(dbe)?;
        let t = txn.open_table(BEST).map_err(dbe)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(dbe)? {
            let (_, v) = row.map_err(dbe)?;
            out.push(to_id(v.value()).ok_or_else(|| corrupt("best", "id length".into()))?);
        }
        Ok(out)
    }

    /// Bodies of the blocks `(height, id)` (None where missing), read in one transaction.
    pub fn bodies(&self, blocks: &[(u64, BlockId)]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let txn = self.db.begin_read().map_err(dbe)?;
        let t = txn.open_table(BODIES).map_err(dbe)?;
        blocks
            .iter()
            .map(|(h, id)| Ok(t.get(block_key(*h, id).as_slice()).map_err(dbe)?.map(|v| v.value().to_vec())))
            .collect()
    }

    /// Persists a plan (new blocks, the best-chain change, the removal of
    /// pruned side blocks) in one transaction; deletions run first, so a block
    /// pruned and then accepted again in the same plan stays.
    pub fn commit(&self, plan: &CommitPlan) -> Result<(), StoreError> {
        if plan.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(dbe)?;
        {
            let mut headers = txn.open_table(HEADERS).map_err(dbe)?;
            let mut bodies = txn.open_table(BODIES).map_err(dbe)?;
            for (height, id) in &plan.pruned {
                let key = block_key(*height, id);
                headers.remove(key.as_slice()).map_err(dbe)?;
                bodies.remove(key.as_slice()).map_err(dbe)?;
            }
            for b in &plan.blocks {
                let mut v = Vec::with_capacity(8 + HEADER_LEN);
                v.extend_from_slice(&b.seq.to_le_bytes());
                v.extend_from_slice(&b.header.encode());
                let key = block_key(b.header.height, &b.id);
                headers.insert(key.as_slice(), v.as_slice()).map_err(dbe)?;
                bodies.insert(key.as_slice(), b.body.as_slice()).map_err(dbe)?;
            }
            if let Some(u) = &plan.best {
                let mut t = txn.open_table(BEST).map_err(dbe)?;
                let mut h = u.from;
                for id in &u.ids {
                    t.insert(h, id.as_slice()).map_err(dbe)?;
                    h += 1;
                }
                // `h` is now one past the new tip; drop what a shorter branch left over.
                for stale in h..=u.old_height {
                    t.remove(stale).map_err(dbe)?;
                }
            }
        }
        txn.commit().map_err(dbe)?;
        Ok(())
    }
}

/// The key of a block in `headers` and `bodies`.
fn block_key(height: u64, id: &BlockId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

fn to_id(b: &[u8]) -> Option<BlockId> {
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tpow_core::chain::genesis_header;
    use tpow_core::ChainParams;

    #[test]
    fn commit_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.redb");
        let g = genesis_header(&ChainParams::devnet());
        let mut h1 = g;
        h1.height = 1;
        let mut h2 = g;
        h2.height = 2;
        {
            let s = Store::open(&path).expect("open");
            s.set_meta("k", b"v").expect("meta");
            let blocks = vec![
                NewRow { seq: 2, header: h2, id: h2.id(), body: b"b2".to_vec() },
                NewRow { seq: 1, header: h1, id: h1.id(), body: b"b1".to_vec() },
            ];
            let best = Some(BestUpdate { from: 0, ids: vec![g.id(), h1.id(), h2.id()], old_height: 0 });
            s.commit(&CommitPlan { blocks, best, pruned: Vec::new() }).expect("commit");
            // A reorg to a shorter branch removes the stale heights.
            let best = Some(BestUpdate { from: 1, ids: vec![h1.id()], old_height: 2 });
            s.commit(&CommitPlan { best, ..CommitPlan::default() }).expect("commit");
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(s.meta("k").expect("meta").as_deref(), Some(&b"v"[..]));
        let loaded = s.load_headers().expect("load");
        assert_eq!(loaded, vec![(1, h1), (2, h2)]);
        assert_eq!(s.best_ids().expect("best"), vec![g.id(), h1.id()]);
        assert_eq!(s.bodies(&[(2, h2.id()), (2, [9; 32])]).expect("bodies"), vec![Some(b"b2".to_vec()), None]);
    }
}
