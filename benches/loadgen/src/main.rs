//! `loadgen`: an XMPP load generator with its own lean client, so one process holds tens of
//! thousands of sessions. Scenarios:
//! - `paper`: the experiment of seed 001 §5.1 — N users online, each sends one chat message
//!   per interval to a random user, M messages each; delivery ratio and latency.
//! - `rate`: N users offering a fixed total rate for a while.
//! - `knee`: N users offering a doubling rate until p99 or delivery breaks: the knee, with
//!   the server's CPU at every step, which says whether the knee is the server's.
//! - `cpu-per-msg`: fixed offered rates; the server's CPU microseconds per routed message.
//! - `presence`: N users with R mutual contacts each go offline and online in rounds;
//!   presence broadcasts delivered per second and their latency (the fan-out cost).
//! - `room`: N users join one XEP-0045 room; some send groupchat messages at a rate, or at
//!   a doubling rate until the room does not keep up: join time, fan-out latency from send
//!   to the last occupant, delivery, the server's CPU (scenario/room.rs).
//! - `connections`: N idle sessions; server RSS per session and login rate; with `--storm`,
//!   all drop and reconnect at once, and the time until all are back.
//!
//! Latency is end to end: the send time travels in the message body and the receiver reads
//! it, so both ends must share a clock (same host).
//!
//! `--transport websocket` carries the XMPP stream over RFC 7395 WebSocket (`--ws-url`)
//! instead of TCP, the scenarios unchanged.
//!
//! `--protocol raw` speaks benches/relay's line protocol instead of XMPP (paper, rate, knee,
//! cpu-per-msg, room: a room is the relay's group): the same connections and messages
//! through a server that only relays.

mod client;
mod cpu;
mod procs;
mod sasl;
mod scan;
mod scenario;
mod stats;
mod tls;

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "XMPP load generator for martlet and its peers")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario shares.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Server address (the client port, or the Direct TLS port with `--tls direct`).
    #[arg(long, default_value = "127.0.0.1:5222", global = true)]
    pub server: SocketAddr,
    /// Several servers (the nodes of a cluster): with --procs, process i connects its users
    /// to the i-th (round robin), so messages between processes cross nodes.
    #[arg(long, value_delimiter = ',', global = true)]
    pub servers: Vec<SocketAddr>,
    #[arg(long, default_value = "localhost", global = true)]
    pub domain: String,
    /// Accounts are PREFIX<i>@DOMAIN for i in FIRST..FIRST+USERS.
    #[arg(long, default_value = "user", global = true)]
    pub prefix: String,
    #[arg(long, default_value_t = 1, global = true)]
    pub first: u32,
    #[arg(long, default_value_t = 1000, global = true)]
    pub users: u32,
    #[arg(long, default_value = "pw", global = true)]
    pub password: String,
    /// SASL mechanism for every login.
    #[arg(long, value_enum, default_value = "plain", global = true)]
    pub sasl: sasl::Mechanism,
    /// Transport: plain TCP, STARTTLS on the client port, or Direct TLS (XEP-0368).
    #[arg(long, value_enum, default_value = "none", global = true)]
    pub tls: tls::TlsMode,
    /// What carries the stream: TCP (with `--tls`), or WebSocket (RFC 7395) to `--ws-url`,
    /// plain ws:// (SASL PLAIN then needs a server that allows it, e.g. behind a TLS proxy).
    #[arg(long, value_enum, default_value = "tcp", global = true)]
    pub transport: client::Transport,
    /// The WebSocket endpoint, ws://HOST:PORT/PATH; default ws://SERVER/xmpp-websocket
    /// (`--server` then being the HTTP listener). Set only with `--transport websocket`.
    #[arg(long, value_parser = client::WsUrl::parse, global = true)]
    pub ws_url: Option<client::WsUrl>,
    /// PEM file of the CA (or self-signed certificate) the server's certificate must chain to;
    /// without it, any certificate is accepted (a dev server's), and loadgen says so.
    #[arg(long, global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Enable XEP-0198 stream management (with resumption) on every session, and answer
    /// the server's ack requests with the count of stanzas received.
    #[arg(long, global = true)]
    pub sm: bool,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 200, global = true)]
    pub login_concurrency: usize,
    #[arg(long, default_value_t = 30, global = true)]
    pub connect_timeout_secs: u64,
    /// Connect from this many loopback addresses (127.1.0.0 onwards, user i from the
    /// (i mod N)-th) instead of from 127.0.0.1 alone: one source address reaches one server
    /// port from at most the ephemeral range's ports (28,232 here), and past about half of
    /// them every connect() scans the rest. 0: the kernel picks the address.
    #[arg(long, default_value_t = 0, global = true)]
    pub source_addresses: u32,
    /// Try a failed login this many more times, a second apart, before counting it an
    /// error: for filling a cluster with idle sessions, where one lost login stops the fill.
    /// Measurements of login errors leave it at 0.
    #[arg(long, default_value_t = 0, global = true)]
    pub login_retries: u32,
    /// XMPP, or the line protocol of benches/relay (no login: `HELLO <user>@<domain>`; a
    /// room is a relay group).
    #[arg(long, value_enum, default_value = "xmpp", global = true)]
    pub protocol: client::Protocol,
    /// Write the result as JSON here too.
    #[arg(long, global = true)]
    pub out: Option<std::path::PathBuf>,
    /// Split the user range over this many processes (one process may open at most
    /// `ulimit -n` sockets, and one load process saturates its core before a fast server
    /// does); their results are merged into one.
    #[arg(long, default_value_t = 1, global = true)]
    pub procs: u32,
    /// Set by the parent on each child process: which slice of the range is this one's.
    #[arg(long, hide = true, global = true)]
    pub proc_index: Option<u32>,
    /// Messages go to any user of the whole range, also those held by other processes.
    #[arg(skip)]
    pub peers_first: u32,
    #[arg(skip)]
    pub peers_count: u32,
}

impl Common {
    /// The address user number `i` of this process connects from (`--source-addresses`).
    pub fn source_for(&self, i: u32) -> Option<std::net::IpAddr> {
        if self.source_addresses == 0 {
            return None;
        }
        let k = (self.first.wrapping_add(i)) % self.source_addresses;
        Some(std::net::Ipv4Addr::new(127, 1 + (k >> 16) as u8, (k >> 8) as u8, k as u8).into())
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// N users; each sends M messages, one per interval, to random users.
    Paper {
        #[arg(long, default_value_t = 100)]
        messages: u32,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 5)]
        drain_secs: u64,
        /// The server's processes (comma-separated): their CPU over the sending, in % of a
        /// core and per message (one load process only).
        #[arg(long = "server-pid", value_delimiter = ',')]
        server_pids: Vec<u32>,
    },
    /// N users offering RATE messages/s in total for SECS seconds.
    Rate {
        #[arg(long)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 3)]
        drain_secs: u64,
    },
    /// N idle sessions held for HOLD_SECS; with --server-pid, the server's RSS per session;
    /// with --storm, then all drop and reconnect at once.
    Connections {
        #[arg(long, default_value_t = 5)]
        hold_secs: u64,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long)]
        storm: bool,
    },
    /// N users log in once, then offer a total rate doubling from START_RATE until p99 passes
    /// P99_MS_MAX or delivery falls under DELIVERY_MIN; one step halfway back; the knee. With
    /// --server-pid, the server's CPU at every step, and whether the knee is the server's.
    Knee {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, default_value_t = 1000)]
        start_rate: u32,
        #[arg(long, default_value_t = 256_000)]
        rate_max: u32,
        #[arg(long, default_value_t = 5)]
        step_secs: u64,
        #[arg(long, default_value_t = 3)]
        drain_secs: u64,
        #[arg(long, default_value_t = 10.0)]
        p99_ms_max: f64,
        #[arg(long, default_value_t = 0.999)]
        delivery_min: f64,
    },
    /// N users offer each of RATES msg/s in total for SECS seconds: the server's CPU
    /// microseconds per routed message at each (needs --server-pid).
    CpuPerMsg {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, value_delimiter = ',', default_value = "2000,4000,8000")]
        rates: Vec<u32>,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 3)]
        drain_secs: u64,
    },
    /// N users with ROSTER mutual contacts each; ROUNDS times a BATCH of them goes offline
    /// and comes back: presence broadcasts delivered per second, and their latency.
    Presence {
        /// The server's processes (comma-separated): their CPU time is read in every round.
        #[arg(long = "server-pid", value_delimiter = ',')]
        server_pids: Vec<u32>,
        #[arg(long, default_value_t = 20)]
        roster: u32,
        #[arg(long, default_value_t = 10)]
        rounds: u32,
        #[arg(long, default_value_t = 50)]
        batch: u32,
    },
    /// N users join ROOM (the first creates and configures it); SENDERS of them send
    /// groupchat messages at RATE msg/s in total, STEP_SECS per step, the rate doubling up to
    /// RATE_MAX while steps hold: join time, fan-out latency to the last occupant, delivery.
    Room {
        #[command(flatten)]
        server: ServerArgs,
        /// The room's local part.
        #[arg(long, default_value = "bench")]
        room: String,
        /// The MUC service; "" -> conference.<domain>.
        #[arg(long, default_value = "")]
        muc_domain: String,
        /// A field of the owner's configuration form, VAR=VALUE[,VALUE...], repeatable;
        /// none: an instant room with the server's defaults.
        #[arg(long = "room-config")]
        room_config: Vec<String>,
        #[arg(long, default_value_t = 100)]
        join_concurrency: usize,
        #[arg(long, default_value_t = 1)]
        senders: u32,
        /// The first step's total rate, msg/s.
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// Double the rate while steps hold, up to this; 0: one step at RATE.
        #[arg(long, default_value_t = 0)]
        rate_max: u32,
        #[arg(long, default_value_t = 5)]
        step_secs: u64,
        /// Longest wait for a step's last copies (it ends once all are in).
        #[arg(long, default_value_t = 10)]
        drain_secs: u64,
        /// A step holds with send-to-last p99 up to this, ...
        #[arg(long, default_value_t = 50.0)]
        p99_ms_max: f64,
        /// ... delivery (copies / messages × occupants) at least this, and no error.
        #[arg(long, default_value_t = 0.999)]
        delivery_min: f64,
    },
}

/// The measured server, for the stepped scenarios.
#[derive(Args, Clone, Debug)]
struct ServerArgs {
    /// The server's processes (comma-separated): their CPU time is read at every step.
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Cores the server may use: a step saturated it at 90 % of these.
    #[arg(long, default_value_t = 1.0)]
    server_cores: f64,
}

impl ServerArgs {
    fn server(&self) -> scenario::steps::Server {
        scenario::steps::Server { pids: self.server_pids.clone(), cores: self.server_cores.max(0.01) }
    }
}

/// Prints the result, and writes it as JSON with `--out`.
fn emit(report: &stats::Report, common: &Common) {
    report.print();
    if let Some(path) = &common.out {
        std::fs::write(path, report.json()).expect("writing the JSON result");
    }
}

/// Checks `--transport` against the other options; for WebSocket, settles the URL
/// (`ws_url` is `Some` exactly when sessions use it) and connects to its address.
fn settle_transport(common: &mut Common) -> Result<(), String> {
    match common.transport {
        client::Transport::Tcp if common.ws_url.is_some() => Err("--ws-url needs --transport websocket".into()),
        client::Transport::Tcp => Ok(()),
        client::Transport::WebSocket => {
            if common.tls != tls::TlsMode::None || common.protocol != client::Protocol::Xmpp || !common.servers.is_empty() {
                return Err("--transport websocket is plain ws:// to one server, XMPP: no --tls, --protocol raw or --servers".into());
            }
            let url = match common.ws_url.take() {
                Some(url) => url,
                None => client::WsUrl::parse(&format!("ws://{}/xmpp-websocket", common.server))?,
            };
            common.server = url.addr;
            common.ws_url = Some(url);
            Ok(())
        }
    }
}

fn main() {
    let mut cli = Cli::parse();
    match tls::Tls::new(cli.common.tls, cli.common.ca.as_deref()) {
        Ok(t) => tls::set(t),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    }
    cli.common.peers_first = cli.common.first;
    cli.common.peers_count = cli.common.users;
    if let Err(e) = settle_transport(&mut cli.common) {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
    if cli.common.procs > 1 && matches!(cli.scenario, Scenario::Presence { .. }) {
        eprintln!("loadgen: presence runs in one process (subscriptions need one view)");
        std::process::exit(2);
    }
    if cli.common.procs > 1 && matches!(cli.scenario, Scenario::Room { .. }) {
        eprintln!("loadgen: room runs in one process (a message's last copy is seen in one place)");
        std::process::exit(2);
    }
    if cli.common.procs > 1 && matches!(&cli.scenario, Scenario::Paper { server_pids, .. } if !server_pids.is_empty()) {
        eprintln!("loadgen: paper --server-pid runs in one process (one reading of the server per offer)");
        std::process::exit(2);
    }
    if cli.common.protocol == client::Protocol::Raw && matches!(cli.scenario, Scenario::Presence { .. }) {
        eprintln!("loadgen: the raw protocol has no presence");
        std::process::exit(2);
    }
    if let Scenario::CpuPerMsg { server, .. } = &cli.scenario {
        if server.server_pids.is_empty() {
            eprintln!("loadgen: cpu-per-msg needs --server-pid");
            std::process::exit(2);
        }
    }
    let stepped = matches!(cli.scenario, Scenario::Knee { .. } | Scenario::CpuPerMsg { .. });
    // The stepped scenarios always run in load processes of their own (one by default), the
    // parent reading the server's CPU and merging every step.
    if stepped && cli.common.proc_index.is_none() {
        let report = match &cli.scenario {
            Scenario::Knee { server, start_rate, rate_max, step_secs, drain_secs, p99_ms_max, delivery_min } => {
                let plan = scenario::knee::Plan {
                    start_rate: *start_rate,
                    rate_max: *rate_max,
                    step_secs: *step_secs,
                    drain_secs: *drain_secs,
                    p99_ms_max: *p99_ms_max,
                    delivery_min: *delivery_min,
                };
                scenario::knee::run(&cli.common, plan, server.server())
            }
            Scenario::CpuPerMsg { server, rates, secs, drain_secs } => {
                scenario::cpu_per_msg::run(&cli.common, rates, *secs, *drain_secs, server.server())
            }
            _ => unreachable!("only stepped scenarios"),
        };
        emit(&report, &cli.common);
        return;
    }
    if cli.common.procs > 1 && cli.common.proc_index.is_none() {
        let server_pid = match cli.scenario {
            Scenario::Connections { server_pid, .. } => server_pid,
            _ => None,
        };
        let report = procs::run_parent(&cli.common, server_pid);
        emit(&report, &cli.common);
        return;
    }
    if let Some(index) = cli.common.proc_index {
        procs::take_slice(&mut cli.common, index);
        if !cli.common.servers.is_empty() {
            cli.common.server = cli.common.servers[index as usize % cli.common.servers.len()];
        }
        if let Scenario::Rate { rate, .. } = &mut cli.scenario {
            *rate = (*rate / cli.common.procs).max(1);
        }
        if let Scenario::Connections { server_pid, .. } = &mut cli.scenario {
            *server_pid = None; // the parent measures the server once for all processes
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    if stepped {
        local.block_on(&rt, scenario::steps::serve(&cli.common));
        return;
    }
    let report = local.block_on(&rt, async {
        match cli.scenario {
            Scenario::Paper { messages, interval_ms, drain_secs, server_pids } => {
                scenario::traffic::run(&cli.common, "paper", interval_ms as f64 / 1000.0, messages, drain_secs, &server_pids).await
            }
            Scenario::Rate { rate, secs, drain_secs } => {
                let interval_secs = cli.common.users as f64 / rate as f64;
                let per_user = ((rate as u64 * secs) / cli.common.users as u64).max(1) as u32;
                scenario::traffic::run(&cli.common, "rate", interval_secs, per_user, drain_secs, &[]).await
            }
            Scenario::Connections { hold_secs, server_pid, storm } => {
                scenario::connections::run(&cli.common, hold_secs, server_pid, storm).await
            }
            Scenario::Knee { .. } | Scenario::CpuPerMsg { .. } => unreachable!("stepped scenarios are served above"),
            Scenario::Presence { server_pids, roster, rounds, batch } => {
                let plan = scenario::presence::Plan { users: cli.common.users, roster, rounds, batch };
                scenario::presence::run(&cli.common, plan, &server_pids).await
            }
            Scenario::Room { server, room, muc_domain, room_config, join_concurrency, senders, rate, rate_max, step_secs, drain_secs, p99_ms_max, delivery_min } => {
                let service = if muc_domain.is_empty() { format!("conference.{}", cli.common.domain) } else { muc_domain };
                let config = room_config
                    .iter()
                    .map(|f| {
                        let (var, values) = f.split_once('=').unwrap_or((f, ""));
                        (var.to_owned(), values.split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect())
                    })
                    .collect();
                let plan = scenario::room::Plan {
                    room: format!("{room}@{service}"),
                    config,
                    join_concurrency,
                    senders: senders.max(1),
                    steps: scenario::knee::Plan { start_rate: rate.max(1), rate_max: rate_max.max(rate), step_secs, drain_secs, p99_ms_max, delivery_min },
                };
                scenario::room::run(&cli.common, plan, &server.server()).await
            }
        }
    });
    emit(&report, &cli.common);
}
