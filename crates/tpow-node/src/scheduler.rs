//! Who gets the node's compute: chat first, mining around it.
//!
//! A node exists to serve language models; proof of work fills the time chat does
//! not need. The rule is a duty cycle: while no chat request is queued or running,
//! mining runs freely; while one is, mining may take at most `mine_share` of each
//! period (0: mining waits until the queue is empty). The miner asks [`ComputeGate::grant`]
//! before each slice of work and is preempted within one forward pass when chat
//! arrives during a free slice. Pure: it reads one counter and returns a decision.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Length of one duty cycle while chat is waiting. Short enough that a 10% share
/// still gives mining a slice every 50 ms; long enough for one mainnet forward pass
/// per thread in a 10% slice.
pub const PERIOD: Duration = Duration::from_millis(50);

/// Default `--mine-share`.
pub const DEFAULT_MINE_SHARE: f64 = 0.1;

/// What the miner may do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grant {
    /// No chat is waiting: mine until preempted (chat arrives) or the tip moves.
    Free,
    /// Chat is waiting: mine for `run`, then rest for `rest`.
    Slice { run: Duration, rest: Duration },
    /// Chat is waiting and mining gets no share: wait (re-ask after `Duration`, or as
    /// soon as the queue empties).
    Wait(Duration),
}

/// The shared decision point between the chat engine and the miner.
#[derive(Clone, Debug)]
pub struct ComputeGate {
    demand: Arc<AtomicUsize>,
    share: f64,
}

impl ComputeGate {
    /// `demand` counts chat requests queued or running (the engine's); `mine_share`
    /// is clamped to 0..=1 (NaN counts as 0).
    pub fn new(demand: Arc<AtomicUsize>, mine_share: f64) -> ComputeGate {
        let share = if mine_share.is_nan() { 0.0 } else { mine_share.clamp(0.0, 1.0) };
        ComputeGate { demand, share }
    }

    /// A gate for a node without chat: mining always runs freely.
    pub fn no_chat() -> ComputeGate {
        ComputeGate::new(Arc::new(AtomicUsize::new(0)), 1.0)
    }

    /// Whether mining must make room right now.
    pub fn chat_waiting(&self) -> bool {
        self.share < 1.0 && self.demand.load(Ordering::Relaxed) > 0
    }

    /// Chat requests queued or running.
    pub fn demand(&self) -> usize {
        self.demand.load(Ordering::Relaxed)
    }

    /// The share of compute mining may take while chat waits.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// The miner's next slice.
    pub fn grant(&self) -> Grant {
        if !self.chat_waiting() {
            return Grant::Free;
        }
        if self.share <= 0.0 {
            return Grant::Wait(PERIOD);
        }
        let run = PERIOD.mul_f64(self.share);
        Grant::Slice { run, rest: PERIOD.saturating_sub(run) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_demand_turns_free_mining_into_a_duty_cycle() {
        let demand = Arc::new(AtomicUsize::new(0));
        let gate = ComputeGate::new(demand.clone(), 0.2);
        assert_eq!(gate.grant(), Grant::Free);
        demand.store(2, Ordering::Relaxed);
        let Grant::Slice { run, rest } = gate.grant() else { panic!("expected a slice") };
        assert_eq!(run + rest, PERIOD);
        assert!((run.as_secs_f64() / PERIOD.as_secs_f64() - 0.2).abs() < 1e-9);
        demand.store(0, Ordering::Relaxed);
        assert_eq!(gate.grant(), Grant::Free);
    }

    #[test]
    fn zero_share_waits_full_share_ignores_chat() {
        let demand = Arc::new(AtomicUsize::new(1));
        assert_eq!(ComputeGate::new(demand.clone(), 0.0).grant(), Grant::Wait(PERIOD));
        assert_eq!(ComputeGate::new(demand.clone(), f64::NAN).grant(), Grant::Wait(PERIOD));
        assert_eq!(ComputeGate::new(demand.clone(), 1.0).grant(), Grant::Free);
        assert_eq!(ComputeGate::new(demand, 7.0).grant(), Grant::Free);
        assert_eq!(ComputeGate::no_chat().grant(), Grant::Free);
    }
}
