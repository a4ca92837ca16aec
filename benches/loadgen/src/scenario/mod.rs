//! Scenarios, and the login of a whole user range they share.

pub mod connections;
pub mod cpu_per_msg;
pub mod knee;
pub mod presence;
pub mod room;
pub mod steps;
pub mod traffic;

use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::client::{login, Account, Session};
use crate::stats::latency_histogram;
use crate::Common;

pub struct LoggedIn {
    /// `None` where that user's login failed.
    pub sessions: Vec<Option<Session>>,
    pub errors: u32,
    pub logins_per_sec: f64,
    /// From first to last login, in seconds.
    pub secs: f64,
    /// Each successful login's time from connect to initial presence, in microseconds.
    pub login_micros: Histogram<u64>,
}

/// Logs in every user of the range, `login_concurrency` at a time.
/// Pause before a failed login is tried again (`--login-retries`).
const LOGIN_RETRY_PAUSE: Duration = Duration::from_secs(1);

pub async fn login_all(common: &Common) -> LoggedIn {
    let started = Instant::now();
    let gate = Rc::new(Semaphore::new(common.login_concurrency));
    let timeout = Duration::from_secs(common.connect_timeout_secs);
    let mut tasks = Vec::with_capacity(common.users as usize);
    for i in 0..common.users {
        let (gate, common) = (gate.clone(), common.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            let user = format!("{}{}", common.prefix, common.first + i);
            let acct = Account { server: common.server, domain: &common.domain, user, password: &common.password, resource: format!("lg{i}"), presence: "<presence/>".into(), sasl: common.sasl, tls: crate::tls::get(), sm: common.sm, protocol: common.protocol, source: common.source_for(i), websocket: common.ws_url.as_ref() };
            let began = Instant::now();
            let mut retries_left = common.login_retries;
            loop {
                match login(&acct, timeout).await {
                    Ok(s) => break Ok((s, began.elapsed())),
                    Err(e) if retries_left > 0 => {
                        eprintln!("login failed, retrying: {e}");
                        retries_left -= 1;
                        tokio::time::sleep(LOGIN_RETRY_PAUSE).await;
                    }
                    Err(e) => break Err(e),
                }
            }
        }));
    }
    let mut sessions = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    let mut login_micros = latency_histogram();
    for t in tasks {
        match t.await.expect("login task") {
            Ok((s, took)) => {
                let _ = login_micros.record((took.as_micros() as u64).max(1));
                sessions.push(Some(s));
            }
            Err(e) => {
                if errors < 5 {
                    eprintln!("login failed: {e}");
                }
                errors += 1;
                sessions.push(None);
            }
        }
    }
    let ok = sessions.iter().flatten().count();
    let secs = started.elapsed().as_secs_f64();
    if common.proc_index.is_some() {
        crate::procs::announce_online_and_wait();
    }
    LoggedIn { sessions, errors, logins_per_sec: ok as f64 / secs, secs, login_micros }
}
