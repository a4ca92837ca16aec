//! CPU time of processes (the server's, the load processes'), from /proc/PID/stat: what
//! says whether a step of load met the server's limit or the load generator's.

/// User plus system CPU seconds used so far by all of `pids` (every thread of each); `None`
/// if there are none or one of them is gone.
pub fn cpu_secs(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for pid in pids {
        ticks += stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    }
    Some(ticks as f64 / ticks_per_sec)
}

/// utime + stime of a /proc/PID/stat line (fields 14 and 15, proc(5)).
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses:
    // count fields from the last ')'; the first after it is field 3.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(14 - 3)?.parse::<u64>().ok()? + fields.get(15 - 3)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_a_name_with_spaces() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 100 1000 10";
        assert_eq!(stat_ticks(stat), Some(300));
        assert!(cpu_secs(&[std::process::id()]).is_some());
        assert_eq!(cpu_secs(&[]), None);
    }
}
