//! Brownout: when the CPU is saturated, stop starting real-time ranking and serve the fallback
//! chain (precomputed, segment, popular lists), until the CPU has room again.
//!
//! Admission control bounds the requests in flight, but a flood of requests that are refused
//! still costs CPU to read, parse and answer: measured with 3x the admission limit of callers
//! that retry at once, the runtime ran every task about 10 ms late, an admitted request's real-time
//! stage ran into its 80 ms deadline however few requests were admitted (limits 64, 16 and 8 gave
//! origin-side p99s of 92, 90 and 84 ms), and only then fell back. A real-time answer that cannot
//! meet its deadline is CPU spent for nothing; the fallback chain answers in a few Redis round
//! trips.
//!
//! The signal is the runtime's scheduling lag, not request latency: a probe task asks to wake every
//! [`PROBE`] and records how late it ran. Latency rises too when a Redis shard is slow, and cutting
//! work would not help then (the deadline already bounds it); lag rises only when runnable tasks
//! wait for a core. Brownout starts when the median lag of the last [`WINDOW`] probes (100 ms)
//! reaches `serving.brownout_lag_ms` (20 by default), and ends when it falls under half that
//! (hysteresis, so it does not flap). The median, not the largest: one late wake-up (a page fault,
//! a busy neighbour) is not saturation; most wake-ups of 100 ms being late is. Cached lists are still served; answers say `source: precomputed/segment/popular` and
//! are counted under `cascade_fallbacks_total{reason="brownout"}`; `cascade_runtime_lag_seconds`
//! and `cascade_brownout` show the state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntGauge};

/// How often the probe asks to wake.
pub const PROBE: Duration = Duration::from_millis(10);

/// Probes the decision looks at: the last 100 ms.
pub const WINDOW: usize = 10;

/// The median lag of the last [`WINDOW`] probes (pure; the probe task feeds it).
#[derive(Debug, Default)]
pub struct LagWindow {
    samples: [Duration; WINDOW],
    next: usize,
}

impl LagWindow {
    /// Records one probe's lag; returns the median over the window (the upper one of the middle
    /// two).
    pub fn push(&mut self, lag: Duration) -> Duration {
        self.samples[self.next] = lag;
        self.next = (self.next + 1) % WINDOW;
        let mut sorted = self.samples;
        sorted.sort_unstable();
        sorted[WINDOW / 2]
    }
}

/// Whether brownout is on after a window whose median lag was `lag` (pure): on at `threshold`,
/// off under half of it; never with a zero threshold (off by configuration).
pub fn next_state(on: bool, lag: Duration, threshold: Duration) -> bool {
    if threshold.is_zero() {
        return false;
    }
    if on { lag >= threshold / 2 } else { lag >= threshold }
}

/// The process-wide brownout switch.
#[derive(Debug)]
pub struct Brownout {
    threshold: Duration,
    on: AtomicBool,
    lag_micros: AtomicU64,
}

impl Brownout {
    /// A switch that turns on at `threshold` of lag (zero: never).
    pub fn new(threshold: Duration) -> Arc<Self> {
        Arc::new(Brownout { threshold, on: AtomicBool::new(false), lag_micros: AtomicU64::new(0) })
    }

    /// A switch that never turns on (tools and tests that run no probe).
    pub fn off() -> Arc<Self> {
        Self::new(Duration::ZERO)
    }

    /// Whether real-time ranking is paused now.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The median probe lag over the last window.
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_micros.load(Ordering::Relaxed))
    }

    /// Records the window's median lag after a probe; logs the transitions.
    pub fn observe(&self, median: Duration) {
        self.lag_micros.store(median.as_micros() as u64, Ordering::Relaxed);
        let was = self.is_on();
        let now = next_state(was, median, self.threshold);
        if now != was {
            self.on.store(now, Ordering::Relaxed);
            let lag_ms = median.as_secs_f64() * 1000.0;
            if now {
                tracing::warn!(
                    lag_ms,
                    "brownout: the CPU is saturated; real-time ranking paused, fallback lists served"
                );
            } else {
                tracing::info!(lag_ms, "brownout over: real-time ranking resumed");
            }
        }
    }

    /// The probe: every [`PROBE`], how late this task ran; ends when the switch is dropped.
    pub async fn watch(switch: Weak<Self>, lag_gauge: Gauge, on_gauge: IntGauge) {
        let mut window = LagWindow::default();
        loop {
            let asked = Instant::now();
            tokio::time::sleep(PROBE).await;
            let lag = asked.elapsed().saturating_sub(PROBE);
            let Some(switch) = switch.upgrade() else { return };
            switch.observe(window.push(lag));
            lag_gauge.set(switch.lag().as_secs_f64());
            on_gauge.set(i64::from(switch.is_on()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_late_probe_is_not_saturation_most_late_probes_are() {
        let mut window = LagWindow::default();
        assert_eq!(window.push(50 * MS), Duration::ZERO, "one late wake-up");
        for _ in 0..WINDOW / 2 - 1 {
            window.push(30 * MS);
        }
        assert_eq!(window.push(30 * MS), 30 * MS, "six of ten late");
        for _ in 0..WINDOW {
            window.push(MS);
        }
        assert_eq!(window.push(MS), MS, "the late probes left the window");
    }

    #[test]
    fn on_at_the_threshold_off_under_half_of_it() {
        let threshold = 10 * MS;
        assert!(!next_state(false, 9 * MS, threshold));
        assert!(next_state(false, 10 * MS, threshold));
        assert!(next_state(true, 6 * MS, threshold), "hysteresis: stays on above half");
        assert!(next_state(true, 5 * MS, threshold));
        assert!(!next_state(true, 4 * MS, threshold));
        assert!(!next_state(false, Duration::from_secs(1), Duration::ZERO), "zero threshold: off");
    }

    #[test]
    fn the_switch_follows_the_lag() {
        let switch = Brownout::new(10 * MS);
        switch.observe(12 * MS);
        assert!(switch.is_on());
        assert_eq!(switch.lag(), 12 * MS);
        switch.observe(7 * MS);
        assert!(switch.is_on());
        switch.observe(2 * MS);
        assert!(!switch.is_on());
        assert!(!Brownout::off().is_on());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_turns_it_on_and_the_probe_ends_with_the_switch() {
        let switch = Brownout::new(20 * MS);
        let (lag, on) = (Gauge::new("lag", "lag").unwrap(), IntGauge::new("on", "on").unwrap());
        let probe = tokio::spawn(Brownout::watch(Arc::downgrade(&switch), lag.clone(), on.clone()));
        tokio::time::sleep(3 * PROBE).await;
        assert!(!switch.is_on(), "an idle runtime has no lag");
        // Hold the only thread between probes, ten times: every wake-up is about 30 ms late.
        for _ in 0..WINDOW {
            tokio::time::sleep(MS).await;
            std::thread::sleep(40 * MS);
        }
        assert!(switch.is_on(), "lag {:?}", switch.lag());
        assert_eq!(on.get(), 1);
        assert!(lag.get() >= 0.02, "{}", lag.get());
        drop(switch);
        tokio::time::timeout(Duration::from_secs(1), probe).await.expect("the probe ends").unwrap();
    }
}
