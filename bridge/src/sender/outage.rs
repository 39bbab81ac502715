//! The outage gate: while Twinzo as a whole is failing, one probe request at a time.
//!
//! Without it every login would keep its own backoff, so a hundred robots would send a
//! hundred retries per backoff step into a service that is down, and after it came back each
//! login would sit out the rest of its own step (up to `retry.max_delay_ms`) before sending.
//! With it:
//!
//! - An outage failure (no answer, 5xx, 429, a wrong URL or key: every retry of the table in
//!   [`crate::twinzo::classify`]) opens the gate. Nothing is launched until the gate's own
//!   backoff step has passed; then one request goes, the probe, for logins that have not
//!   probed yet in this outage (so one login whose records make Twinzo fail cannot hold the
//!   others back). Requests already out when the gate opened do not step its backoff.
//! - A probe that fails the same way takes the next step of the gate's backoff.
//! - Any answer from Twinzo (accepted, rejected, a login's own error) closes the gate. When a
//!   probe had failed first, the outage was real: the sender then releases every login it had
//!   put on hold for an outage failure, so the backlog drains at once. When the first probe
//!   succeeds, the failure was most likely the one request's own, and its logins keep their
//!   backoff.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::Backoff;

/// What the gate lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The gate is closed: send as usual.
    All,
    /// The gate is open and its step is over: one request.
    Probe,
    /// The gate is open: nothing until [`Outage::wake_at`].
    Nothing,
}

pub struct Outage {
    backoff: Backoff,
    open: Option<Open>,
    /// Numbers the openings, so a probe's answer counts only for the opening that sent it.
    openings: u64,
}

struct Open {
    epoch: u64,
    until: Instant,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    probing: bool,
    failed_probes: u32,
    /// Logins that failed or probed in this outage; cleared once every ready one has.
    tried: HashSet<String>,
}

impl Outage {
    pub fn new(backoff: Backoff) -> Self {
        Outage {
            backoff,
            open: None,
            openings: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The current opening, to be carried by its probe.
    pub fn epoch(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.epoch)
    }

    pub fn admits(&self, now: Instant) -> Admit {
        match &self.open {
            None => Admit::All,
            Some(o) if o.probing || now < o.until => Admit::Nothing,
            Some(_) => Admit::Probe,
        }
    }

    /// When an open gate next lets a probe through (none while a probe is out).
    pub fn wake_at(&self) -> Option<Instant> {
        self.open.as_ref().filter(|o| !o.probing).map(|o| o.until)
    }

    /// Orders `ready` logins for a probe: those that have not tried in this outage first.
    /// Once every ready login has tried, the round starts again.
    pub fn probe_order(&mut self, mut ready: Vec<String>) -> Vec<String> {
        let Some(open) = self.open.as_mut() else {
            return ready;
        };
        if ready.iter().all(|l| open.tried.contains(l)) {
            open.tried.clear();
        }
        ready.sort_by_key(|l| open.tried.contains(l));
        ready
    }

    /// A probe carrying `logins` was launched; with none (nothing was ready to send), the
    /// gate looks again after the shortest step instead.
    pub fn probe_started(&mut self, logins: &[String], now: Instant) {
        let min = self.backoff.min;
        if let Some(open) = self.open.as_mut() {
            if logins.is_empty() {
                open.until = now + min;
            } else {
                open.probing = true;
                open.tried.extend(logins.iter().cloned());
            }
        }
    }

    /// A request for `logins` failed with an outage verdict at `now`. Opens the gate, or, when
    /// the request was this opening's probe (`probe` is its [`Outage::epoch`]), takes the
    /// next step (`after`, Twinzo's `Retry-After`, when longer). Returns the wait before the
    /// next probe when this changed it.
    pub fn failed(
        &mut self,
        logins: &[&str],
        probe: Option<u64>,
        after: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        let max = self.backoff.max;
        let step = |delays: &mut dyn Iterator<Item = Duration>| {
            let step = delays.next().unwrap_or(max);
            after.map_or(step, |a| a.max(step))
        };
        let tried = logins.iter().map(ToString::to_string);
        let Some(open) = self.open.as_mut() else {
            let mut delays = Box::new(self.backoff.delays());
            let wait = step(&mut delays);
            self.openings += 1;
            self.open = Some(Open {
                epoch: self.openings,
                until: now + wait,
                delays,
                probing: false,
                failed_probes: 0,
                tried: tried.collect(),
            });
            return Some(wait);
        };
        open.tried.extend(tried);
        if !(open.probing && probe == Some(open.epoch)) {
            // A request launched before this opening: the gate already waits.
            return None;
        }
        open.probing = false;
        open.failed_probes += 1;
        let wait = step(&mut open.delays);
        open.until = now + wait;
        Some(wait)
    }

    /// Twinzo answered a request. Closes the gate; true when a failed probe had confirmed
    /// the outage (release the logins held for it).
    pub fn answered(&mut self) -> bool {
        self.open.take().is_some_and(|o| o.failed_probes > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Outage {
        Outage::new(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2.0,
        })
    }

    fn logins(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    /// Sends `login` as the probe and has it fail at `t`; returns the next wait.
    fn probe_fails(g: &mut Outage, login: &str, t: Instant) -> Option<Duration> {
        g.probe_started(&logins(&[login]), t);
        g.failed(&[login], g.epoch(), None, t)
    }

    #[test]
    fn closed_gate_admits_everything() {
        let g = gate();
        assert_eq!(g.admits(Instant::now()), Admit::All);
        assert_eq!(g.wake_at(), None);
    }

    #[test]
    fn an_outage_admits_one_probe_after_the_step() {
        let mut g = gate();
        let t = Instant::now();
        let wait = g.failed(&["a"], None, None, t).expect("the gate opens");
        assert_eq!(
            wait,
            Duration::from_millis(100),
            "first step is the minimum"
        );
        assert_eq!(g.admits(t), Admit::Nothing);
        assert_eq!(g.wake_at(), Some(t + wait));
        assert_eq!(g.admits(t + wait), Admit::Probe);

        g.probe_started(&logins(&["b"]), t + wait);
        assert_eq!(g.admits(t + wait), Admit::Nothing, "one probe at a time");
        assert_eq!(g.wake_at(), None, "the probe's answer wakes the sender");
    }

    #[test]
    fn requests_already_out_do_not_step_the_backoff() {
        let mut g = gate();
        let t = Instant::now();
        g.failed(&["a"], None, None, t).unwrap();
        for login in ["b", "c", "d"] {
            assert_eq!(g.failed(&[login], None, None, t), None);
        }
        assert_eq!(g.wake_at(), Some(t + Duration::from_millis(100)));
    }

    #[test]
    fn a_failed_probe_steps_and_honours_retry_after() {
        let mut g = gate();
        let t = Instant::now();
        g.failed(&["a"], None, None, t).unwrap();
        g.probe_started(&logins(&["b"]), t);
        let later = t + Duration::from_secs(1);
        let wait = g
            .failed(&["b"], g.epoch(), Some(Duration::from_secs(7)), later)
            .unwrap();
        assert_eq!(wait, Duration::from_secs(7));
        assert_eq!(g.admits(later + Duration::from_secs(6)), Admit::Nothing);
        assert_eq!(g.admits(later + wait), Admit::Probe);
    }

    #[test]
    fn steps_never_pass_the_maximum() {
        let mut g = gate();
        let mut t = Instant::now();
        g.failed(&["a"], None, None, t).unwrap();
        for _ in 0..40 {
            let wait = probe_fails(&mut g, "a", t).unwrap();
            assert!(wait <= Duration::from_secs(5), "{wait:?}");
            t += wait;
        }
    }

    #[test]
    fn an_answer_after_a_failed_probe_releases_the_held_logins() {
        let mut g = gate();
        let t = Instant::now();
        g.failed(&["a"], None, None, t).unwrap();
        probe_fails(&mut g, "b", t).unwrap();
        g.probe_started(&logins(&["c"]), t);
        assert!(g.answered(), "the outage was confirmed: release");
        assert_eq!(g.admits(t), Admit::All);
    }

    #[test]
    fn a_first_probe_that_succeeds_keeps_the_failed_logins_waiting() {
        let mut g = gate();
        let t = Instant::now();
        g.failed(&["poison"], None, None, t).unwrap();
        g.probe_started(&logins(&["b"]), t);
        assert!(!g.answered(), "one request failed, not Twinzo");
        assert_eq!(g.admits(t), Admit::All);
        assert!(!g.answered(), "a closed gate has nothing to release");
    }

    #[test]
    fn probes_go_to_logins_that_have_not_tried_then_start_over() {
        let mut g = gate();
        let t = Instant::now();
        g.failed(&["a"], None, None, t).unwrap();
        assert_eq!(g.probe_order(logins(&["a", "b", "c"]))[0], "b");
        probe_fails(&mut g, "b", t).unwrap();
        assert_eq!(g.probe_order(logins(&["a", "b", "c"]))[0], "c");
        probe_fails(&mut g, "c", t).unwrap();
        let order = g.probe_order(logins(&["a", "b", "c"]));
        assert_eq!(order, logins(&["a", "b", "c"]), "all tried: a new round");
        assert_eq!(
            g.probe_order(logins(&["a"])),
            logins(&["a"]),
            "a lone login"
        );
    }

    #[test]
    fn a_step_with_nothing_to_send_waits_the_shortest_step() {
        let mut g = gate();
        let t = Instant::now();
        let wait = g.failed(&["a"], None, None, t).unwrap();
        g.probe_started(&[], t + wait);
        assert_eq!(g.admits(t + wait), Admit::Nothing);
        assert_eq!(g.wake_at(), Some(t + wait + Duration::from_millis(100)));
    }

    #[test]
    fn a_probe_of_an_earlier_opening_does_not_step_the_current_one() {
        let mut g = gate();
        let t = Instant::now();
        g.failed(&["a"], None, None, t).unwrap();
        let first = g.epoch();
        g.probe_started(&logins(&["b"]), t);
        assert!(!g.answered(), "closed by another request's answer");
        let wait = g.failed(&["c"], None, None, t).expect("a new opening");
        assert_eq!(
            g.failed(&["b"], first, None, t),
            None,
            "the old probe's failure"
        );
        assert_eq!(g.wake_at(), Some(t + wait));
    }
}
