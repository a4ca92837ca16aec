//! The throughput knee: N users log in once, then offer a total message rate that doubles
//! step by step until a step does not hold (p99 over the bound, delivery under the floor,
//! or a send error); then one step halfway between the last that held and the first that
//! did not. The knee is the highest offered rate that held.

use std::time::Duration;

use serde_json::json;

use super::traffic::{Step, Traffic};
use crate::stats::Report;
use crate::Common;

/// Quiet time between the logins and the first step: a server still finishing the logins'
/// work (or collecting their garbage) would fail the first step for the wrong reason.
const WARMUP: Duration = Duration::from_secs(3);

pub struct Plan {
    pub start_rate: u32,
    pub rate_max: u32,
    pub step_secs: u64,
    pub drain_secs: u64,
    pub p99_ms_max: f64,
    pub delivery_min: f64,
}

impl Plan {
    pub fn holds(&self, step: &Step) -> bool {
        let p99_ms = step.histogram.value_at_quantile(0.99) as f64 / 1000.0;
        step.send_errors == 0 && step.delivery_ratio() >= self.delivery_min && p99_ms <= self.p99_ms_max
    }

    /// The rate after `last`: double while steps hold; after the first that does not, one
    /// step halfway back (rounded to 100), then stop.
    pub fn next_rate(&self, last: u32, last_held: bool, held: Option<u32>, bisected: bool) -> Option<u32> {
        if bisected {
            return None;
        }
        if last_held {
            return (last * 2 <= self.rate_max).then_some(last * 2);
        }
        let h = held?;
        let mid = (h + last) / 2 / 100 * 100;
        (mid > h && mid < last).then_some(mid)
    }
}

pub async fn run(common: &Common, plan: Plan) -> Report {
    let mut traffic = Traffic::start(common).await;
    tokio::time::sleep(WARMUP).await;
    let users = traffic.users_online.max(1);
    let (mut held, mut failed) = (None::<u32>, None::<u32>);
    let mut bisected = false;
    let mut steps = Vec::new();
    let mut rate = plan.start_rate;
    loop {
        let interval_secs = users as f64 / rate as f64;
        let per_user = ((rate as u64 * plan.step_secs) / users as u64).max(1) as u32;
        let step = traffic.offer(common, interval_secs, per_user, plan.drain_secs).await;
        let ok = plan.holds(&step);
        let q = |p: f64| step.histogram.value_at_quantile(p) as f64 / 1000.0;
        eprintln!("knee: {rate} msg/s offered: p99 {:.3} ms, delivered {}/{}: {}", q(0.99), step.delivered, step.sent, if ok { "held" } else { "did not hold" });
        steps.push(json!({
            "offered_msgs_per_sec": rate, "sent": step.sent, "delivered": step.delivered,
            "send_errors": step.send_errors, "latency_p50_ms": q(0.5), "latency_p99_ms": q(0.99),
            "latency_p999_ms": q(0.999), "held": ok,
        }));
        if ok {
            held = Some(held.map_or(rate, |h| h.max(rate)));
        } else {
            failed = Some(failed.map_or(rate, |f| f.min(rate)));
        }
        match plan.next_rate(rate, ok, held, bisected) {
            Some(next) => {
                bisected = !ok;
                rate = next;
            }
            None => break,
        }
    }
    traffic.close().await;
    let mut report = Report::new("knee");
    report
        .add("users_online", users)
        .add("knee_msgs_per_sec", held.unwrap_or(0))
        .add("first_failed_msgs_per_sec", failed.map_or(json!(null), |f| json!(f)))
        .add("p99_ms_max", plan.p99_ms_max)
        .add("delivery_min", plan.delivery_min)
        .add("step_secs", plan.step_secs)
        .add("steps", json!(steps));
    report
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
        // The halfway step ends the search, whether it held or not.
        assert_eq!(p.next_rate(48000, true, Some(48000), true), None);
        assert_eq!(p.next_rate(48000, false, Some(32000), true), None);
        // Nothing held at all, or the ceiling reached: stop.
        assert_eq!(p.next_rate(2000, false, None, false), None);
        assert_eq!(p.next_rate(128000, true, Some(128000), false), None);
    }
}
