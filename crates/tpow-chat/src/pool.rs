//! Per-sequence work spread over candle's thread pool.

use std::sync::Mutex;

/// Calls `f(i, &mut items[i])` for every item, the items spread over candle's
/// thread pool (the matmuls around such work already use every thread, so a serial
/// loop would leave the others idle). Each call sees only its own item, so a result
/// does not depend on the thread that computed it.
pub(crate) fn for_each_mut<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    if items.len() <= 1 {
        items.iter_mut().enumerate().for_each(|(i, item)| f(i, item));
        return;
    }
    let cells: Vec<Mutex<&mut T>> = items.iter_mut().map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(cells.len(), |range| {
        for i in range {
            // One index per item: the lock is never contended (nor poisoned, as a
            // panic here propagates out of the pool).
            let mut item = cells[i].lock().unwrap_or_else(|p| p.into_inner());
            f(i, &mut item);
        }
    });
}
