//! The throughput knee: N users log in once, then offer a total message rate that doubles
//! step by step until a step does not hold (p99 over the bound, delivery under the floor,
//! or a send error); then one step halfway between the last that held and the first that
//! did not. The knee is the highest offered rate that held.
//!
//! It is the server's knee only if the server was saturated there: at the knee's step or
//! at the first step above it that did not hold, the server's CPU reached 90 % of the cores
//! it may use. Otherwise something else (usually the load generator) gave out first, and
//! the knee is a lower bound of the server's. Steps run over `--procs` load processes
//! (scenario/steps.rs), with the server's CPU read at every one.

use serde_json::json;

use super::steps::{Measured, Server, Stepper};
use crate::stats::Report;
use crate::Common;

pub struct Plan {
    pub start_rate: u32,
    pub rate_max: u32,
    pub step_secs: u64,
    pub drain_secs: u64,
    pub p99_ms_max: f64,
    pub delivery_min: f64,
}

impl Plan {
    pub fn holds(&self, step: &Measured) -> bool {
        step.send_errors == 0 && step.delivery_ratio() >= self.delivery_min && step.p99_ms() <= self.p99_ms_max
    }

    /// The rate after `last`: double while steps hold; after the first that does not, one
    /// step halfway back (rounded to 100 in a range of 200 or more), then stop.
    pub fn next_rate(&self, last: u32, last_held: bool, held: Option<u32>, bisected: bool) -> Option<u32> {
        if bisected {
            return None;
        }
        if last_held {
            return (last * 2 <= self.rate_max).then_some(last * 2);
        }
        let h = held?;
        // Rounded to 100 for knee's thousands; a room's rates are tens, and halfway between
        // 10 and 20 is 15, not 0.
        let unit = if last - h >= 200 { 100 } else { 1 };
        let mid = (h + last) / 2 / unit * unit;
        (mid > h && mid < last).then_some(mid)
    }
}

pub fn run(common: &Common, plan: Plan, server: Server) -> Report {
    let mut stepper = Stepper::start(common, server.clone());
    let (mut held, mut failed) = (None::<u32>, None::<u32>);
    let mut bisected = false;
    let mut steps = Vec::new();
    let mut rate = plan.start_rate;
    loop {
        let step = stepper.step(rate, plan.step_secs, plan.drain_secs);
        let ok = plan.holds(&step);
        eprintln!(
            "knee: {rate} msg/s offered: p99 {:.3} ms, delivered {}/{}, server CPU {}: {}",
            step.p99_ms(),
            step.delivered,
            step.sent,
            step.server_pct_of_core().map_or("unknown".into(), |p| format!("{p:.0} % of a core")),
            if ok { "held" } else { "did not hold" }
        );
        let mut record = step.json();
        record["held"] = json!(ok);
        if ok {
            held = Some(held.map_or(rate, |h| h.max(rate)));
        } else {
            failed = Some(failed.map_or(rate, |f| f.min(rate)));
        }
        steps.push((rate, step.server_saturated(), record));
        match plan.next_rate(rate, ok, held, bisected) {
            Some(next) => {
                bisected = !ok;
                rate = next;
            }
            None => break,
        }
    }
    let users_online = stepper.users_online;
    stepper.finish();
    let saturated = |r: Option<u32>| r.and_then(|r| steps.iter().find(|s| s.0 == r)).and_then(|s| s.1);
    let verdict = verdict(saturated(held), saturated(failed), failed.is_some());
    let mut report = Report::new("knee");
    report
        .add("users_online", users_online)
        .add("processes", common.procs)
        .add("knee_msgs_per_sec", held.unwrap_or(0))
        .add("knee_verdict", verdict)
        .add("first_failed_msgs_per_sec", failed.map_or(json!(null), |f| json!(f)))
        .add("server_cores", server.cores)
        .add("p99_ms_max", plan.p99_ms_max)
        .add("delivery_min", plan.delivery_min)
        .add("step_secs", plan.step_secs)
        .add("steps", json!(steps.into_iter().map(|s| s.2).collect::<Vec<_>>()));
    report
}

/// Whose knee it is, from whether the server was saturated at the knee's step and at the
/// first step above it that did not hold (None: not measured, or no such step).
fn verdict(at_knee: Option<bool>, at_failed: Option<bool>, any_failed: bool) -> &'static str {
    match (at_knee, at_failed) {
        (Some(true), _) | (_, Some(true)) => "server-saturated",
        (None, None) => "unknown (no --server-pid)",
        _ if !any_failed => "lower bound (every step held up to --rate-max)",
        _ => "lower bound (generator-limited)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan { start_rate: 2000, rate_max: 200_000, step_secs: 5, drain_secs: 3, p99_ms_max: 10.0, delivery_min: 0.999 }
    }

    #[test]
    fn doubles_until_a_step_fails_then_bisects_once() {
        let p = plan();
        assert_eq!(p.next_rate(2000, true, Some(2000), false), Some(4000));
        assert_eq!(p.next_rate(64000, false, Some(32000), false), Some(48000));
        assert_eq!(p.next_rate(20, false, Some(10), false), Some(15));
        // The halfway step ends the search, whether it held or not.
        assert_eq!(p.next_rate(48000, true, Some(48000), true), None);
        assert_eq!(p.next_rate(48000, false, Some(32000), true), None);
        // Nothing held at all, or the ceiling reached: stop.
        assert_eq!(p.next_rate(2000, false, None, false), None);
        assert_eq!(p.next_rate(128000, true, Some(128000), false), None);
    }

    #[test]
    fn a_knee_is_the_servers_only_where_the_server_was_saturated() {
        assert_eq!(verdict(Some(false), Some(true), true), "server-saturated");
        assert_eq!(verdict(Some(true), None, false), "server-saturated");
        // The case: the step failed with the server's cores half idle.
        assert_eq!(verdict(Some(false), Some(false), true), "lower bound (generator-limited)");
        assert_eq!(verdict(Some(false), None, false), "lower bound (every step held up to --rate-max)");
        assert_eq!(verdict(None, None, true), "unknown (no --server-pid)");
    }
}
