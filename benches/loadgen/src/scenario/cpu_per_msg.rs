//! Server CPU per routed message: fixed offered rates, each for a while, and the server's
//! CPU microseconds per delivered message at each (/proc/PID/stat, drain included). Below
//! saturation this figure does not depend on how fast the load generator is, so servers
//! (and benches/relay) compare on it even where their knees are the generator's.
//! A rate at which the server saturated, or delivery fell short, is flagged: its figure is
//! then no longer the cost of a message below saturation.

use serde_json::json;

use super::steps::{Server, Stepper};
use crate::stats::Report;
use crate::Common;

pub fn run(common: &Common, rates: &[u32], secs: u64, drain_secs: u64, server: Server) -> Report {
    let mut stepper = Stepper::start(common, server.clone());
    let mut steps = Vec::new();
    for &rate in rates {
        let step = stepper.step(rate, secs, drain_secs);
        eprintln!(
            "cpu-per-msg: {rate} msg/s offered: delivered {}/{}, server {} us/msg at {} of a core",
            step.delivered,
            step.sent,
            step.server_us_per_msg().map_or("unknown".into(), |u| format!("{u:.1}")),
            step.server_pct_of_core().map_or("unknown".into(), |p| format!("{p:.0} %")),
        );
        steps.push(step.json());
    }
    let users_online = stepper.users_online;
    stepper.finish();
    let mut report = Report::new("cpu-per-msg");
    report
        .add("users_online", users_online)
        .add("processes", common.procs)
        .add("server_cores", server.cores)
        .add("step_secs", secs)
        .add("steps", json!(steps));
    report
}
