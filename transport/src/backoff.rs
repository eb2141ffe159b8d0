//! Exponential backoff with jitter, for redials.

use std::time::Duration;

/// Exponential backoff with jitter for redials.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay: `base * 2^attempt`, capped at `max`, then scaled by a random factor in
    /// [0.75, 1.25).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        exp.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let expected = [100u64, 200, 400, 800, 1600, 2000, 2000];
        for base in expected {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            let base = base as f64;
            assert!(
                d >= base * 0.75 - 1e-6 && d < base * 1.25 + 1e-6,
                "{d} vs {base}"
            );
        }
        b.reset();
        let d = b.next_delay();
        assert!(d < Duration::from_millis(126));
    }
}
