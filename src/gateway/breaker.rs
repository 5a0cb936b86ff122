//! Circuit breakers per target: a target that keeps failing is skipped for a cooldown, then
//! probed by one request; a success closes the circuit again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::portkey::CircuitBreaker;

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Breaker state of every target seen, by `route:path`.
#[derive(Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// Whether a request may go to the target now (always, without a breaker).
    pub fn allow(&self, key: &str, breaker: Option<CircuitBreaker>) -> bool {
        if breaker.is_none() {
            return true;
        }
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = states.entry(key.to_owned()).or_default();
        match state.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            // Cooldown over: one probe at a time.
            Some(_) if state.probing => false,
            Some(_) => {
                state.probing = true;
                true
            }
        }
    }

    /// Records how the target did; opens or closes its circuit.
    pub fn record(
        &self,
        (route, target): (&str, &str),
        breaker: Option<CircuitBreaker>,
        ok: bool,
        metrics: &Metrics,
    ) {
        let Some(breaker) = breaker else {
            return;
        };
        let key = format!("{route}:{target}");
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = states.entry(key).or_default();
        if ok {
            *state = State::default();
            metrics.circuit(route, target, false);
            return;
        }
        state.failures += 1;
        if state.probing || state.failures >= breaker.failure_threshold {
            state.open_until = Some(Instant::now() + Duration::from_millis(breaker.cooldown));
            state.probing = false;
            metrics.circuit(route, target, true);
        }
    }
}
