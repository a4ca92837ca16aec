//! `martlet serve`: opens storage and TLS once, then starts one executor per core, each with
//! its listeners (SO_REUSEPORT), its routing state and its end of the core mesh.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shards::listener::bind_reuseport;
use shards::ring::TwoLevelRing;
use shards::runtime::{self, Core, RuntimeConfig};

use shards::cluster::{Cluster, Inbound};

use crate::c2s::accept::{accept_loop, Entry};
use crate::c2s::registration_limit::RegistrationLimit;
use crate::cluster::MeshLink;
use crate::config::Config;
use crate::listeners::Kind;
use crate::metrics::{self, CoreCounters};
use crate::router::node_link::NodeLink;
use crate::router::{CoreMsg, CoreState};
use crate::storage::Storage;

/// How long a task queue may run before the executor checks for I/O. Tasks here are small
/// and yield often anyway; at 1 ms the preemption timer's own interrupts cost more than
/// they saved (80k msg/s on 2 cores: p50 11 ms at 1 ms, 8 ms at 20 ms).
const PREEMPT_TIMER: Duration = Duration::from_millis(20);
/// Entries of each executor's io_uring. The kernel sizes the ring's cancel hash from it
/// (2^(log2(completion entries) - 5) buckets, at most 256), and every loop of the executor
/// cancels its preemption timers, each cancel walking one bucket of the armed socket polls:
/// at glommio's default of 128 there are 8 buckets, so that walk grew with every idle
/// session (tuning/README.md, "Idle sessions").
const IO_RING_ENTRIES: usize = 4096;
/// Memory each executor registers with its io_uring for DMA file I/O, which martlet does
/// not do (its files go through std::fs on the storage threads): glommio's minimum, where
/// its default pinned 10 MiB resident per core from the start.
const IO_REGISTERED_MEMORY_BYTES: usize = 64 << 10;

/// Asks the kernel for no transparent huge pages in this process, before the cores start.
/// mimalloc advises huge pages for its arenas, and with THP in `madvise` mode (Debian's
/// default) every thread's first small allocations then fault in a whole 2 MiB page, and
/// sessions' small objects spread over partly used ones: measured on one core with 15,000
/// idle sessions, an idle node's RSS fell from 32 to 17 MB and each idle session's from
/// 6.5 to 5.5 kB without them (tuning/results/2026-12-05-idle-memory.md). A server of many
/// small objects gains little from fewer TLB misses. The flag holds for the whole process
/// and its threads; on failure (an old kernel) martlet runs on, with huge pages.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        log::warn!("prctl(PR_SET_THP_DISABLE): {}", std::io::Error::last_os_error());
    }
}

/// How often each core looks at the stop flag set by SIGTERM/SIGINT.
const STOP_POLL: Duration = Duration::from_millis(100);
/// listen(2) backlog of the metrics endpoint: one scraper or two.
const METRICS_BACKLOG: i32 = 64;
/// How long sessions get to say goodbye before a stopping core exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub fn serve(cfg: Config) -> Result<(), String> {
    disable_transparent_huge_pages();
    let cfg = Arc::new(cfg);
    crate::security_log::set_events_per_minute(cfg.log.security_events_per_minute);
    let claimed = crate::listeners::claim(&cfg)?;
    let storage = Storage::open(&cfg.storage).map_err(|e| format!("storage: {e}"))?;
    let tls = crate::tls::server_config(&cfg).map_err(|e| format!("TLS: {e}"))?;
    let cores = cfg.cores_effective();
    let counters: Arc<Vec<Arc<CoreCounters>>> = Arc::new((0..cores).map(|_| Arc::default()).collect());
    let peers = Arc::new(crate::c2s::limits::PeerLimits::new(&cfg.limits));
    let registrations = Arc::new(RegistrationLimit::new(cfg.limits.registrations_per_ip_per_hour, cfg.limits.tracked_addresses_max));
    let muc_directory = Arc::new(crate::muc::Directory::new(&cfg.muc, cfg.limits.tracked_addresses_max));
    if let Some(service) = cfg.muc_domain() {
        let index = storage.docs_under(service.to_owned(), crate::muc::service::INDEX_PREFIX.into(), cfg.muc.rooms_max);
        muc_directory.load(futures_lite::future::block_on(index).map_err(|e| format!("storage: the rooms' index: {e}"))?);
    }
    log::info!("martlet {} serving {} on {} cores", env!("CARGO_PKG_VERSION"), cfg.domain, cores);
    crate::startup_log::log(&cfg, &claimed.listeners, cores);
    let listeners = Arc::new(claimed.listeners.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    let (cluster, inboxes) = match crate::cluster::start(&cfg, cores)? {
        Some((cluster, inboxes)) => (Some(cluster), inboxes.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    // Each core takes its own receiver of the mesh.
    let inboxes = Arc::new(Mutex::new(inboxes));
    let rt = RuntimeConfig { cores, core_mailbox_messages_max: cfg.limits.core_mailbox_messages_max, preempt_timer: PREEMPT_TIMER, io_ring_entries: IO_RING_ENTRIES, io_registered_memory_bytes: IO_REGISTERED_MEMORY_BYTES };
    runtime::run(&rt, move |core: Core<CoreMsg>| {
        let (cfg, storage, tls, counters, stop, peers) = (cfg.clone(), storage.clone(), tls.clone(), counters.clone(), stop.clone(), peers.clone());
        let (listeners, registrations, muc_directory) = (listeners.clone(), registrations.clone(), muc_directory.clone());
        let inbox = inboxes.lock().expect("inboxes").get_mut(core.mesh.core_id()).and_then(Option::take);
        let node = cluster.clone().zip(inbox);
        async move { core_main(core, cfg, &listeners, storage, tls, counters, peers, (registrations, muc_directory), node, stop).await }
    })
    .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn core_main(
    core: Core<CoreMsg>,
    cfg: Arc<Config>,
    listeners: &[(SocketAddr, Kind)],
    storage: Storage,
    tls: crate::tls::ServerTls,
    counters: Arc<Vec<Arc<CoreCounters>>>,
    peers: Arc<crate::c2s::limits::PeerLimits>,
    (registrations, muc_directory): (Arc<RegistrationLimit>, Arc<crate::muc::Directory>),
    node: Option<(Cluster, flume::Receiver<Inbound>)>,
    stop: Arc<AtomicBool>,
) {
    let id = core.mesh.core_id();
    let cores = core.mesh.cores();
    // Alone on the ring until the mesh reports other members.
    let (ring, link) = match &node {
        Some((cluster, _)) => {
            let ring = crate::cluster::ring(&cfg, &[cluster.me()], cluster.node_id(), cores);
            (ring, Some(Box::new(MeshLink(cluster.sender())) as Box<dyn NodeLink>))
        }
        None => (TwoLevelRing::single_node(&cfg.c2s.listen.to_string(), cores), None),
    };
    let state = CoreState::new(cfg.clone(), core.mesh, ring, link, storage, tls, counters[id].clone(), peers, registrations, muc_directory);
    glommio::spawn_local(state.wheel.clone().drive()).detach();
    let cluster = node.as_ref().map(|(c, _)| c.clone());
    if let Some((_, inbox)) = node {
        glommio::spawn_local(crate::cluster::serve_core(state.clone(), inbox, cores)).detach();
    }
    for (_peer, inbound) in core.inbound {
        let state = state.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = inbound.recv().await {
                state.dispatch(msg);
            }
        })
        .detach();
    }
    let mesh_counters = cluster.as_ref().map(Cluster::counters);
    for &(addr, kind) in listeners {
        match kind {
            Kind::Starttls => listen(&state, addr, Entry::Starttls),
            Kind::DirectTls => listen(&state, addr, Entry::DirectTls),
            Kind::WebSocket => listen(&state, addr, Entry::WebSocket),
            Kind::Https => listen(&state, addr, Entry::Https),
            Kind::Metrics if id == 0 => match bind_reuseport(addr, METRICS_BACKLOG) {
                Ok(l) => {
                    glommio::spawn_local(metrics::serve(l, counters.clone(), mesh_counters.clone())).detach();
                }
                Err(e) => fatal(&format!("metrics listener on {addr}: {e}")),
            },
            Kind::Metrics => {}
        }
    }
    if id == 0 && cfg.upload_domain().is_some() {
        glommio::spawn_local(crate::modules::upload::purge_forever(state.clone())).detach();
    }
    if id == 0 {
        match crate::admin::bind(&cfg) {
            Ok(l) => {
                let status = cluster.map(|c| (c, cores));
                glommio::spawn_local(crate::admin::serve(l, state.clone(), status)).detach();
            }
            Err(e) => fatal(&format!("admin socket {}: {e}", crate::admin::socket_path(&cfg).display())),
        }
    }
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    // Clients learn the server is going (RFC 6120 <system-shutdown/>) instead of seeing a
    // dead socket; everything they sent before is already stored or delivered.
    state.shut_down_sessions();
    let started = Instant::now();
    while state.session_count() > 0 && started.elapsed() < SHUTDOWN_GRACE {
        glommio::timer::sleep(STOP_POLL).await;
    }
    log::info!("core {id}: stopped");
}

fn listen(state: &Rc<CoreState>, addr: SocketAddr, entry: Entry) {
    match bind_reuseport(addr, state.cfg.c2s.backlog as i32) {
        Ok(listener) => {
            glommio::spawn_local(accept_loop(state.clone(), listener, entry)).detach();
        }
        Err(e) => fatal(&format!("listener on {addr}: {e}")),
    }
}

/// A core that cannot listen cannot serve: stop the whole process with a clear reason.
fn fatal(what: &str) -> ! {
    eprintln!("martlet: {what}");
    std::process::exit(2);
}
