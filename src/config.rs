//! The server's TOML configuration: the file format users write, its defaults,
//! and the checks that turn a bad file into an error naming the offending key
//! before anything starts listening.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The documented configuration with every key at its default value.
/// A unit test keeps it equal to `Config::default()`, so it can go into the
/// README as-is.
pub const EXAMPLE: &str = r#"domain = "localhost"          # the one XMPP domain served
cores = 0                     # executors; 0 = all available cores

[c2s]
listen = ["0.0.0.0:5222", "[::]:5222"]  # RFC 6120 client port (STARTTLS): IPv4 and IPv6; one "IP:port" or a list
require_tls = true            # refuse to authenticate before STARTTLS
plain_without_tls = false     # offer SASL PLAIN on an unencrypted stream (never when require_tls)
backlog = 4096                # listen(2) backlog

[c2s_direct_tls]
listen = ["0.0.0.0:5223", "[::]:5223"]  # XEP-0368 Direct TLS; "" or [] disables

[tls]
cert = ""                     # PEM chain; empty -> self-signed cert for `domain`, made on first start, kept in storage path
key = ""                      # PEM private key

[storage]
backend = "embedded"          # "embedded" (redb file in `path`) or "postgres" (for clusters)
path = "./martlet-data"       # directory; holds martlet.redb, the dev certificate and admin.sock
postgres_url = ""             # with backend = "postgres": "postgresql://USER:PASSWORD@HOST:PORT/DB"
postgres_tls = "disable"      # or "verify-full": TLS required, the certificate must chain to postgres_ca_file and name the URL's host
postgres_ca_file = ""         # PEM CA for verify-full
scram_iterations = 4096       # PBKDF2 rounds for new credentials
password_hash_threads = 2     # threads running PBKDF2 (PLAIN checks, registration, password changes), never a core
password_hash_queue_jobs_max = 2048  # PBKDF2 jobs waiting (about a second of work on two threads: a reconnect storm queues, not fails); full -> logins get <temporary-auth-failure/>, registrations <resource-constraint/>
job_queue_jobs_max = 4096     # storage reads and writes waiting for the storage threads, node-wide; full -> the asking actor waits
archive_queue_messages_max = 16384  # XEP-0313 archive rows waiting for the archive writer; full -> the archiving actor waits
cache_bytes_max = 67108864    # embedded backend: pages redb keeps in memory (redb's own default is 1 GiB, filled by every account read); past it, reads go to the file

[registration]
enabled = false               # XEP-0077 in-band registration

[archive]
enabled = true                # XEP-0313: archive users' chats (each user's preferences apply)

[stream_management]
resume_timeout_secs = 300     # XEP-0198: a resumable session outlives its connection this long; 0 = no resumption
unacked_stanzas_max = 1024    # stanzas sent and not acknowledged; more -> <resource-constraint/>, and they are re-routed
ack_request_stanzas = 4       # ask for an ack (<r/>) once this many stanzas are unacknowledged ...
ack_request_delay_ms = 2000   # ... or once the oldest not yet asked about waited this long

[muc]
enabled = true                # XEP-0045 multi-user chat service
domain = ""                   # its domain; "" -> conference.<domain>
rooms_max = 10000             # rooms alive at once on this node; more -> creating one gets <resource-constraint/>
occupants_max = 1000          # occupants of one room (a room's own max may be lower); more -> <service-unavailable/>
history_messages_max = 50     # messages a room keeps for joiners (its history length may be lower)
history_bytes_max = 262144    # bytes of those messages one room keeps; past it the oldest go
room_mailbox_messages_max = 4096  # stanzas queued for one room; full -> <resource-constraint/> to the sender
rooms_created_per_user_per_hour = 10  # new rooms one account may create per hour, node-wide; more -> <resource-constraint/>

[fast]
token_lifetime_secs = 1209600 # XEP-0484: a FAST token logs its client in for this long (14 days); 0 = FAST off

[cluster]
listen = ""                   # node-to-node mesh address, e.g. "10.0.0.1:5270"; "" = a single node
node_name = ""                # unique per node; "" -> the listen address
seeds = []                    # mesh addresses of nodes to join through, e.g. ["10.0.0.2:5270"]
secret = ""                   # shared by every node; required with listen (nodes without it are refused)
tls = true                    # encrypt the mesh (rustls, the [tls] certificate); the same on every node
vnodes = 160                  # points per node on the global ring
suspicion_timeout_ms = 3000   # silent this long -> suspected; down after as long again
outbound_frames_max = 65536   # queued frames per peer node; full -> sender gets backpressure
frame_bytes_max = 1048576     # largest mesh frame; larger -> that peer connection is closed
confirm_timeout_ms = 5000     # a message to another node unconfirmed this long is sent again (3 attempts)
held_messages_max = 65536     # per core: messages to other nodes awaiting confirmation; full -> senders wait
delivered_receipts_max = 262144  # per core: held messages remembered as delivered, so a copy sent again is dropped
handshake_timeout_ms = 5000   # a connection not authenticated (TLS and secret) this long after accept is closed
pending_handshakes_max = 64   # connections handshaking at once (a thread each); more are closed at accept, counted, logged
members_max = 256             # nodes this node keeps track of; a new one past it takes the place of one long down, else is refused and logged

[http]
listen = []                   # HTTP/1.1 for web clients: RFC 7395 WebSocket at /xmpp-websocket, XEP-0206 BOSH at /http-bind; one "IP:port" or a list; [] disables
tls_listen = []               # the same over TLS (https://, wss://) with the [tls] certificate; one "IP:port" or a list; [] disables
behind_tls_proxy = false      # true: a reverse proxy in front terminates TLS (wss://), so these streams count as encrypted; never expose such a listener directly
see_other_uri = ""            # RFC 7395 §3.6.1: when this node stops, its WebSocket clients are told to reconnect here (another node's or a balancer's wss:// URL) instead of <system-shutdown/>; "" -> not sent
trusted_proxies = []          # addresses of reverse proxies whose X-Forwarded-For names the client, for its per-IP limits and the logs; from anyone else the header is ignored
bosh_wait_secs_max = 60       # XEP-0124: longest a BOSH request is held waiting for stanzas; a client asking more gets this
bosh_inactivity_secs = 60     # a BOSH session with no request held for this long ends, as if its TCP connection dropped
bosh_pause_secs_max = 300     # XEP-0124 §10: longest a client may pause its BOSH session (maxpause)

[upload]
enabled = true                # XEP-0363 HTTP File Upload, served on [http] listen and tls_listen (so only when one is set)
domain = ""                   # its domain; "" -> upload.<domain>
public_url = ""               # how clients reach the HTTP listener, e.g. "https://chat.example.org"; "" -> https://<first http.tls_listen address>, else http(s)://<first http.listen address>
path = ""                     # where files are kept; "" -> <storage path>/uploads
file_bytes_max = 104857600    # one file (100 MiB); a larger slot request -> <not-acceptable/> with <file-too-large/>
quota_bytes_per_user = 1073741824  # bytes one account keeps at once (1 GiB); past it -> <resource-constraint/>
expiry_secs = 2592000         # files are deleted this long after upload (30 days), checked hourly
bytes_per_sec_min = 1024      # an upload slower than this on average, past its first 10 s, is cut (408) and its part deleted

# XEP-0215: STUN/TURN servers for calls, one [[external_services]] table each (none by default), e.g.
# [[external_services]]
# type = "turn"               # "stun" or "turn"
# host = "turn.example.org"
# port = 3478
# transport = "udp"
# secret = "..."              # coturn's static-auth-secret: clients get credentials valid credentials_ttl_secs (86400); "" = none

[metrics]
listen = ""                   # Prometheus text endpoint (GET /metrics), e.g. "127.0.0.1:9464"; "" disables

[log]
security_events_per_minute = 60  # per core: failed logins, handshake timeouts, stream errors, expired sessions; more -> not logged, counted in one "N suppressed" line

[limits]
stanza_bytes_max = 262144             # larger stanza -> <policy-violation/> stream error
stanza_depth_max = 48                 # element levels in a stanza (the stanza is 1); deeper -> <policy-violation/> stream error
stream_header_bytes_max = 8192        # the <stream:stream> start tag; larger -> <policy-violation/> stream error
handshake_timeout_secs = 30           # TCP accept to bound resource
idle_timeout_secs = 600               # no bytes received for this long -> connection-timeout
ping_interval_secs = 120              # server XEP-0199 ping after this much silence
send_stall_secs = 60                  # a client that takes no bytes for this long is disconnected (bounds TLS close_notify too; at shutdown, no wait)
connections_per_ip_max = 200          # open connections from one IP address (IPv6: one /64), node-wide; more -> <policy-violation/>
auth_failures_max = 3                 # per stream; then <not-authorized/> stream error and close
auth_failures_per_ip_per_minute = 30  # node-wide; more failures from one IP (IPv6: /64) in a minute -> further attempts refused until it passes
hibernating_sessions_per_ip_max = 200 # XEP-0198 sessions awaiting resumption from one IP (IPv6: /64), node-wide; more -> the longest waiting ends
resources_per_user_max = 32   # sessions bound at once per account (all nodes); one more -> the oldest ends with <policy-violation/>
hibernating_sessions_per_user_max = 16  # XEP-0198 sessions awaiting resumption per user, per node; more -> the longest waiting ends
registrations_per_ip_per_hour = 5     # XEP-0077 account creation attempts from one address (IPv6: its /64), node-wide; more -> <resource-constraint/> until the hour since its first passes
tracked_addresses_max = 65536         # addresses the auth-failure and registration counts remember, each, node-wide; full -> the oldest auth-failure window is forgotten, a new registering address is refused
session_mailbox_stanzas_max = 1024    # outbound queue per session; full -> that session is closed with <resource-constraint/>, what it could not take re-routed (other resources, offline, or an error to the sender)
session_inflight_requests_max = 64    # what a session asks its user's actor (presence, roster, subscriptions...) in flight; at the limit it stops reading its socket until one is handled
core_mailbox_messages_max = 16384     # depth of each cross-core channel; full -> sender awaits (backpressure)
user_mailbox_messages_max = 4096      # inbound queue of each online user's actor; full -> <resource-constraint/> error to sender
offline_messages_max = 1000           # per user; beyond -> <resource-constraint/> error to sender
roster_items_max = 2000               # per user
roster_group_bytes_max = 1024         # one roster group name; longer -> <not-acceptable/>
directed_presences_max = 1000         # JIDs one session sent directed presence to, remembered to tell them it left; more are still sent, not remembered
caps_cache_entries_max = 4096         # XEP-0115 verified capability hashes remembered per core; full -> the cache starts again empty
csi_held_stanzas_max = 256            # XEP-0352: held for an inactive client; more -> all are sent
mam_page_messages_max = 100           # XEP-0313: results per query page, whatever <max/> asks
mam_messages_per_user_max = 10000     # XEP-0313: messages one user's archive keeps; more -> the oldest are dropped
blocklist_items_max = 1000            # XEP-0191: JIDs a user may block; more -> <resource-constraint/>
pep_item_bytes_max = 131072           # XEP-0163: one published item's payload, in bytes (room for an avatar); larger -> <payload-too-big/>
pep_nodes_max = 64                    # XEP-0163: PEP nodes per user; more -> <resource-constraint/>
pep_node_items_max = 256              # XEP-0163: items one node may keep (publish-options max_items up to this; 'max' = this)
pep_node_bytes_max = 1048576          # XEP-0163: payload bytes one node keeps; a publish past it -> <not-acceptable/><payload-too-big/>
pep_account_bytes_max = 4194304       # XEP-0163: payload bytes all of a user's nodes keep; a publish past it -> <resource-constraint/>
push_services_max = 8                 # XEP-0357: push registrations per user; more -> <resource-constraint/>
push_notifications_per_user_per_minute = 10  # XEP-0357: pushes for one user in any minute; messages past it are counted into the next
fast_clients_per_user_max = 16        # XEP-0484: clients (user-agent ids) holding FAST tokens per user; more -> the one issued a token longest ago loses it
private_xml_docs_max = 64             # XEP-0049: namespaces one user may store (each within stanza_bytes_max); more -> <resource-constraint/>
"#;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The one XMPP domain served, normalised (nameprep) by `Config::load`.
    pub domain: String,
    /// Executors to run; 0 means one per available core.
    pub cores: usize,
    pub c2s: C2s,
    pub c2s_direct_tls: DirectTls,
    pub tls: Tls,
    pub storage: StorageConfig,
    pub registration: Registration,
    pub archive: Archive,
    pub muc: Muc,
    pub stream_management: StreamManagement,
    pub fast: Fast,
    pub http: Http,
    pub upload: Upload,
    pub external_services: Vec<ExternalService>,
    pub metrics: Metrics,
    pub log: Log,
    pub cluster: Cluster,
    pub limits: Limits,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2s {
    pub listen: Listen,
    pub require_tls: bool,
    pub plain_without_tls: bool,
    pub backlog: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectTls {
    /// Empty disables the Direct TLS listener.
    pub listen: Listen,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Empty (together with `key`) means: use the generated dev certificate.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    pub path: PathBuf,
    /// libpq-style URL or key=value string; used only by `Backend::Postgres`.
    pub postgres_url: String,
    /// TLS to PostgreSQL: off, or required with the server's certificate verified.
    pub postgres_tls: PostgresTls,
    /// PEM file of the CA the server's certificate must chain to, for `verify-full`.
    pub postgres_ca_file: PathBuf,
    pub scram_iterations: u32,
    pub password_hash_threads: usize,
    pub password_hash_queue_jobs_max: usize,
    pub job_queue_jobs_max: usize,
    /// The embedded backend's page cache (redb), in bytes: without a bound, every account a
    /// login reads stays cached up to redb's default of 1 GiB.
    pub cache_bytes_max: usize,
    pub archive_queue_messages_max: usize,
}

/// TLS to PostgreSQL, named as libpq's `sslmode` values it matches. There is no mode that
/// encrypts without verifying (libpq's `require`): it stops only a passive listener, and
/// a database on another host is worth the CA file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// Plain TCP: a database on the same host or a private network.
    #[default]
    Disable,
    /// TLS or no connection; the certificate must chain to `postgres_ca_file` and name
    /// the URL's host.
    VerifyFull,
}

/// Which `storage::Store` implementation holds the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb file under `storage.path`.
    #[default]
    Embedded,
    /// A PostgreSQL database at `storage.postgres_url`, shared by a cluster's nodes.
    Postgres,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registration {
    pub enabled: bool,
}

/// XEP-0313 (`modules::mam`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Archive {
    pub enabled: bool,
}

impl Default for Archive {
    fn default() -> Self {
        Archive { enabled: true }
    }
}

/// XEP-0045 multi-user chat (`muc`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Muc {
    pub enabled: bool,
    /// Normalised by `Config::load`: "" becomes `conference.<domain>`.
    pub domain: String,
    pub rooms_max: usize,
    pub occupants_max: usize,
    pub history_messages_max: usize,
    pub history_bytes_max: usize,
    pub room_mailbox_messages_max: usize,
    pub rooms_created_per_user_per_hour: usize,
}

impl Default for Muc {
    fn default() -> Self {
        Muc {
            enabled: true,
            domain: String::new(),
            rooms_max: 10_000,
            occupants_max: 1000,
            history_messages_max: 50,
            history_bytes_max: 262_144,
            room_mailbox_messages_max: 4096,
            rooms_created_per_user_per_hour: 10,
        }
    }
}

impl Config {
    /// The XEP-0045 service's domain, when the service is on.
    pub fn muc_domain(&self) -> Option<&str> {
        self.muc.enabled.then_some(self.muc.domain.as_str())
    }
}

/// XEP-0198 (`modules::stream_mgmt`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamManagement {
    pub resume_timeout_secs: u64,
    pub unacked_stanzas_max: usize,
    pub ack_request_stanzas: usize,
    pub ack_request_delay_ms: u64,
}

impl Default for StreamManagement {
    fn default() -> Self {
        StreamManagement { resume_timeout_secs: 300, unacked_stanzas_max: 1024, ack_request_stanzas: 4, ack_request_delay_ms: 2000 }
    }
}

/// XEP-0484 FAST tokens (`c2s::fast`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fast {
    pub token_lifetime_secs: u64,
}

impl Default for Fast {
    fn default() -> Self {
        Fast { token_lifetime_secs: 14 * 24 * 3600 }
    }
}

/// XEP-0215 (`modules::external_services`): one STUN or TURN server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    #[serde(rename = "type")]
    pub type_: String,
    pub host: String,
    pub port: u16,
    #[serde(default = "udp")]
    pub transport: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default = "a_day")]
    pub credentials_ttl_secs: u64,
}

fn udp() -> String {
    "udp".into()
}

fn a_day() -> u64 {
    86_400
}

/// XEP-0363 (`modules::upload`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upload {
    pub enabled: bool,
    /// Normalised by `Config::load`: "" becomes `upload.<domain>`.
    pub domain: String,
    pub public_url: String,
    pub path: PathBuf,
    pub file_bytes_max: u64,
    pub quota_bytes_per_user: u64,
    pub expiry_secs: u64,
    /// A slower upload holds a connection slot and a file open for nothing: cut after
    /// `modules::upload::RATE_GRACE`.
    pub bytes_per_sec_min: u64,
}

impl Default for Upload {
    fn default() -> Self {
        Upload {
            enabled: true,
            domain: String::new(),
            public_url: String::new(),
            path: PathBuf::new(),
            file_bytes_max: 104_857_600,
            quota_bytes_per_user: 1_073_741_824,
            expiry_secs: 2_592_000,
            bytes_per_sec_min: 1024,
        }
    }
}

impl Config {
    /// The XEP-0363 service's domain, when it is served (on and an HTTP listener set).
    pub fn upload_domain(&self) -> Option<&str> {
        (self.upload.enabled && self.http.serves()).then_some(self.upload.domain.as_str())
    }

    /// Where uploaded files are kept.
    pub fn upload_dir(&self) -> PathBuf {
        if self.upload.path.as_os_str().is_empty() {
            self.storage.path.join("uploads")
        } else {
            self.upload.path.clone()
        }
    }

    /// The URL prefix clients reach the HTTP listener by.
    pub fn upload_base_url(&self) -> String {
        if !self.upload.public_url.is_empty() {
            return self.upload.public_url.trim_end_matches('/').to_owned();
        }
        let (scheme, addrs) = match self.http.tls_listen.addrs() {
            tls if !tls.is_empty() => ("https", tls),
            _ if self.http.behind_tls_proxy => ("https", self.http.listen.addrs()),
            _ => ("http", self.http.listen.addrs()),
        };
        match addrs.first() {
            Some(a) if a.ip().is_unspecified() => format!("{scheme}://{}:{}", self.domain, a.port()),
            Some(a) => format!("{scheme}://{a}"),
            None => format!("{scheme}://{}", self.domain),
        }
    }
}

/// The HTTP listener for web clients (`c2s::websocket`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    pub listen: Listen,
    /// HTTPS: the same endpoints, TLS from `[tls]` (`c2s::accept::Entry::Https`).
    pub tls_listen: Listen,
    pub behind_tls_proxy: bool,
    /// Where WebSocket clients are sent when this node stops (`c2s::websocket`).
    pub see_other_uri: String,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// XEP-0206 BOSH (`c2s::bosh`): the longest `wait`, the inactivity timeout and the
    /// longest pause, in seconds.
    pub bosh_wait_secs_max: u64,
    pub bosh_inactivity_secs: u64,
    pub bosh_pause_secs_max: u64,
}

impl Http {
    /// Some HTTP listener is set, plain or TLS.
    pub fn serves(&self) -> bool {
        !self.listen.addrs().is_empty() || !self.tls_listen.addrs().is_empty()
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: Listen::Many(Vec::new()),
            tls_listen: Listen::Many(Vec::new()),
            behind_tls_proxy: false,
            see_other_uri: String::new(),
            trusted_proxies: Vec::new(),
            bosh_wait_secs_max: 60,
            bosh_inactivity_secs: 60,
            bosh_pause_secs_max: 300,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Empty disables the endpoint; it is unauthenticated, hence off by default.
    pub listen: String,
}

/// What goes into the log: see `crate::security_log`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub security_events_per_minute: u32,
}

impl Default for Log {
    fn default() -> Self {
        Log { security_events_per_minute: 60 }
    }
}

/// The node-to-node mesh (issue 4); an empty `listen` runs a single node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    pub listen: String,
    pub node_name: String,
    pub seeds: Vec<String>,
    pub secret: String,
    pub tls: bool,
    pub vnodes: u32,
    pub suspicion_timeout_ms: u64,
    pub outbound_frames_max: usize,
    pub frame_bytes_max: usize,
    pub confirm_timeout_ms: u64,
    pub held_messages_max: usize,
    pub delivered_receipts_max: usize,
    pub handshake_timeout_ms: u64,
    pub pending_handshakes_max: usize,
    pub members_max: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub stanza_bytes_max: usize,
    pub stanza_depth_max: usize,
    pub stream_header_bytes_max: usize,
    pub handshake_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub connections_per_ip_max: usize,
    pub auth_failures_max: usize,
    pub auth_failures_per_ip_per_minute: usize,
    pub hibernating_sessions_per_ip_max: usize,
    pub resources_per_user_max: usize,
    pub hibernating_sessions_per_user_max: usize,
    pub registrations_per_ip_per_hour: usize,
    pub tracked_addresses_max: usize,
    pub session_mailbox_stanzas_max: usize,
    pub session_inflight_requests_max: usize,
    pub core_mailbox_messages_max: usize,
    pub send_stall_secs: u64,
    pub user_mailbox_messages_max: usize,
    pub offline_messages_max: usize,
    pub roster_items_max: usize,
    pub roster_group_bytes_max: usize,
    pub directed_presences_max: usize,
    pub caps_cache_entries_max: usize,
    pub csi_held_stanzas_max: usize,
    pub mam_page_messages_max: usize,
    pub mam_messages_per_user_max: usize,
    pub blocklist_items_max: usize,
    pub pep_item_bytes_max: usize,
    pub pep_nodes_max: usize,
    pub pep_node_items_max: usize,
    pub pep_node_bytes_max: usize,
    pub pep_account_bytes_max: usize,
    pub push_services_max: usize,
    pub fast_clients_per_user_max: usize,
    pub push_notifications_per_user_per_minute: usize,
    pub private_xml_docs_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            cores: 0,
            c2s: C2s::default(),
            c2s_direct_tls: DirectTls::default(),
            tls: Tls::default(),
            storage: StorageConfig::default(),
            registration: Registration::default(),
            archive: Archive::default(),
            // What `validate` makes of `domain = ""` for the default domain.
            muc: Muc { domain: "conference.localhost".into(), ..Muc::default() },
            stream_management: StreamManagement::default(),
            fast: Fast::default(),
            http: Http::default(),
            upload: Upload { domain: "upload.localhost".into(), ..Upload::default() },
            external_services: Vec::new(),
            metrics: Metrics::default(),
            log: Log::default(),
            cluster: Cluster::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            listen: String::new(),
            node_name: String::new(),
            seeds: Vec::new(),
            secret: String::new(),
            tls: true,
            vnodes: 160,
            suspicion_timeout_ms: 3000,
            outbound_frames_max: 65_536,
            frame_bytes_max: 1_048_576,
            confirm_timeout_ms: 5_000,
            held_messages_max: 65_536,
            delivered_receipts_max: 262_144,
            handshake_timeout_ms: 5_000,
            pending_handshakes_max: 64,
            members_max: 256,
        }
    }
}

impl Default for C2s {
    fn default() -> Self {
        C2s {
            listen: Listen::Many(vec!["0.0.0.0:5222".into(), "[::]:5222".into()]),
            require_tls: true,
            plain_without_tls: false,
            backlog: 4096,
        }
    }
}

impl Default for DirectTls {
    fn default() -> Self {
        DirectTls {
            listen: Listen::Many(vec!["0.0.0.0:5223".into(), "[::]:5223".into()]),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Embedded,
            path: "./martlet-data".into(),
            postgres_url: String::new(),
            postgres_tls: PostgresTls::Disable,
            postgres_ca_file: PathBuf::new(),
            scram_iterations: 4096,
            password_hash_threads: 2,
            password_hash_queue_jobs_max: 2048,
            job_queue_jobs_max: 4096,
            cache_bytes_max: 64 * 1024 * 1024,
            archive_queue_messages_max: 16_384,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stanza_bytes_max: 262_144,
            stanza_depth_max: 48,
            stream_header_bytes_max: 8192,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            ping_interval_secs: 120,
            connections_per_ip_max: 200,
            auth_failures_max: 3,
            auth_failures_per_ip_per_minute: 30,
            hibernating_sessions_per_ip_max: 200,
            resources_per_user_max: 32,
            hibernating_sessions_per_user_max: 16,
            registrations_per_ip_per_hour: 5,
            tracked_addresses_max: 65_536,
            session_mailbox_stanzas_max: 1024,
            session_inflight_requests_max: 64,
            core_mailbox_messages_max: 16_384,
            send_stall_secs: 60,
            user_mailbox_messages_max: 4096,
            offline_messages_max: 1000,
            roster_items_max: 2000,
            roster_group_bytes_max: 1024,
            directed_presences_max: 1000,
            caps_cache_entries_max: 4096,
            csi_held_stanzas_max: 256,
            mam_page_messages_max: 100,
            mam_messages_per_user_max: 10_000,
            blocklist_items_max: 1000,
            pep_item_bytes_max: 131_072,
            pep_nodes_max: 64,
            pep_node_items_max: 256,
            pep_node_bytes_max: 1_048_576,
            pep_account_bytes_max: 4_194_304,
            push_services_max: 8,
            push_notifications_per_user_per_minute: 10,
            fast_clients_per_user_max: 16,
            private_xml_docs_max: 64,
        }
    }
}

/// Why the configuration was refused; `Display` names the file or the key.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The text is not TOML at all; toml's message carries line and column.
    Syntax(String),
    /// A key has a wrong type, is unknown, or has a value that cannot work.
    Key { key: String, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::Syntax(message) => write!(f, "{message}"),
            ConfigError::Key { key, message } => write!(f, "{key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads and checks the file at `path`; `None` gives the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                // serde_path_to_error reports "." when the error is not tied to a key.
                if key == "." {
                    ConfigError::Syntax(inner.to_string())
                } else {
                    key_error(&key, inner.message())
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Executors to start: `cores`, or every core the OS lets us use.
    pub fn cores_effective(&self) -> usize {
        match self.cores {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Checks what serde cannot: values that parse but cannot work.
    /// Normalises `domain` so every later comparison sees one spelling.
    fn validate(&mut self) -> Result<(), ConfigError> {
        self.domain = jid::DomainPart::new(&self.domain)
            .map_err(|e| {
                key_error(
                    "domain",
                    format!("{:?} is not a valid XMPP domain: {e}", self.domain),
                )
            })?
            .to_string();
        self.c2s.listen.check("c2s.listen")?;
        if self.c2s.listen.texts().is_empty() {
            return Err(key_error("c2s.listen", "needs at least one address"));
        }
        self.c2s_direct_tls.listen.check("c2s_direct_tls.listen")?;
        self.http.listen.check("http.listen")?;
        self.http.tls_listen.check("http.tls_listen")?;
        if !self.metrics.listen.is_empty() {
            parse_addr("metrics.listen", &self.metrics.listen)?;
        }
        self.validate_cluster()?;
        self.validate_muc()?;
        if self.upload.domain.is_empty() {
            self.upload.domain = format!("upload.{}", self.domain);
        }
        self.upload.domain = jid::DomainPart::new(&self.upload.domain)
            .map_err(|e| key_error("upload.domain", format!("{:?} is not a valid XMPP domain: {e}", self.upload.domain)))?
            .to_string();
        for s in &self.external_services {
            if !matches!(s.type_.as_str(), "stun" | "turn" | "stuns" | "turns") || !matches!(s.transport.as_str(), "udp" | "tcp") {
                return Err(key_error("external_services", "type is stun, turn, stuns or turns; transport udp or tcp"));
            }
            if s.host.is_empty() || s.credentials_ttl_secs == 0 {
                return Err(key_error("external_services", "needs a host, and credentials_ttl_secs above 0"));
            }
        }
        for (key, value) in [
            ("upload.file_bytes_max", self.upload.file_bytes_max),
            ("upload.expiry_secs", self.upload.expiry_secs),
            ("http.bosh_wait_secs_max", self.http.bosh_wait_secs_max),
            ("http.bosh_inactivity_secs", self.http.bosh_inactivity_secs),
        ] {
            if value == 0 {
                return Err(key_error(key, POSITIVE));
            }
        }
        if self.c2s.require_tls && self.c2s.plain_without_tls {
            return Err(key_error(
                "c2s.plain_without_tls",
                "cannot be true while c2s.require_tls = true (no authentication happens before STARTTLS)",
            ));
        }
        if self.tls.cert.as_os_str().is_empty() != self.tls.key.as_os_str().is_empty() {
            return Err(key_error(
                "tls",
                "set both cert and key, or neither (dev certificate)",
            ));
        }
        if self.storage.path.as_os_str().is_empty() {
            return Err(key_error("storage.path", "must not be empty"));
        }
        if self.c2s.backlog == 0 {
            return Err(key_error("c2s.backlog", POSITIVE));
        }
        if self.storage.backend == Backend::Postgres {
            let url = &self.storage.postgres_url;
            let parsed = url.parse::<postgres::Config>().map_err(|e| e.to_string());
            match parsed {
                Ok(c) if !c.get_hosts().is_empty() => {}
                Ok(_) => return Err(key_error("storage.postgres_url", "needed by backend = \"postgres\", with a host")),
                Err(e) => return Err(key_error("storage.postgres_url", e)),
            }
            if self.storage.postgres_tls == PostgresTls::VerifyFull && self.storage.postgres_ca_file.as_os_str().is_empty() {
                return Err(key_error("storage.postgres_ca_file", "needed by postgres_tls = \"verify-full\""));
            }
        }
        if self.storage.scram_iterations == 0 {
            return Err(key_error("storage.scram_iterations", POSITIVE));
        }
        if self.log.security_events_per_minute == 0 {
            return Err(key_error("log.security_events_per_minute", POSITIVE));
        }
        if self.storage.password_hash_threads == 0 {
            return Err(key_error("storage.password_hash_threads", POSITIVE));
        }
        for (key, value) in [
            ("storage.password_hash_queue_jobs_max", self.storage.password_hash_queue_jobs_max),
            ("storage.job_queue_jobs_max", self.storage.job_queue_jobs_max),
            ("storage.archive_queue_messages_max", self.storage.archive_queue_messages_max),
        ] {
            if value == 0 {
                return Err(key_error(key, POSITIVE));
            }
        }
        if self.stream_management.unacked_stanzas_max == 0 {
            return Err(key_error("stream_management.unacked_stanzas_max", POSITIVE));
        }
        // Every limit is a count, a size or a duration, none of which works as 0.
        // Walking the serialised table covers limits added later, too.
        let limits = toml::Table::try_from(&self.limits).expect("limits serialise as a table");
        match limits
            .iter()
            .find(|(_, value)| value.as_integer() == Some(0))
        {
            Some((name, _)) => Err(key_error(&format!("limits.{name}"), POSITIVE)),
            None => Ok(()),
        }
    }
}

const POSITIVE: &str = "must be greater than 0";

/// Shortest cluster secret accepted, in bytes: it is all that keeps strangers off the mesh.
const CLUSTER_SECRET_BYTES_MIN: usize = 16;

impl Config {
    fn validate_cluster(&mut self) -> Result<(), ConfigError> {
        let c = &mut self.cluster;
        if c.listen.is_empty() {
            return Ok(());
        }
        parse_addr("cluster.listen", &c.listen)?;
        for seed in &c.seeds {
            parse_addr("cluster.seeds", seed)?;
        }
        if c.secret.len() < CLUSTER_SECRET_BYTES_MIN {
            return Err(key_error(
                "cluster.secret",
                format!("at least {CLUSTER_SECRET_BYTES_MIN} bytes, the same on every node"),
            ));
        }
        if self.storage.backend != Backend::Postgres {
            return Err(key_error(
                "storage.backend",
                "a cluster's nodes share one store: set backend = \"postgres\"",
            ));
        }
        for (key, value) in [
            ("cluster.vnodes", c.vnodes as u64),
            ("cluster.suspicion_timeout_ms", c.suspicion_timeout_ms),
            ("cluster.outbound_frames_max", c.outbound_frames_max as u64),
            ("cluster.frame_bytes_max", c.frame_bytes_max as u64),
            ("cluster.confirm_timeout_ms", c.confirm_timeout_ms),
            ("cluster.held_messages_max", c.held_messages_max as u64),
            ("cluster.delivered_receipts_max", c.delivered_receipts_max as u64),
            ("cluster.handshake_timeout_ms", c.handshake_timeout_ms),
            ("cluster.pending_handshakes_max", c.pending_handshakes_max as u64),
            ("cluster.members_max", c.members_max as u64),
        ] {
            if value == 0 {
                return Err(key_error(key, POSITIVE));
            }
        }
        if c.node_name.is_empty() {
            c.node_name = c.listen.clone();
        }
        Ok(())
    }

    fn validate_muc(&mut self) -> Result<(), ConfigError> {
        let m = &mut self.muc;
        if m.domain.is_empty() {
            m.domain = format!("conference.{}", self.domain);
        }
        m.domain = jid::DomainPart::new(&m.domain)
            .map_err(|e| key_error("muc.domain", format!("{:?} is not a valid XMPP domain: {e}", m.domain)))?
            .to_string();
        if m.domain == self.domain {
            return Err(key_error("muc.domain", "must differ from the server's domain"));
        }
        for (key, value) in [
            ("muc.rooms_max", m.rooms_max),
            ("muc.occupants_max", m.occupants_max),
            ("muc.room_mailbox_messages_max", m.room_mailbox_messages_max),
            ("muc.rooms_created_per_user_per_hour", m.rooms_created_per_user_per_hour),
        ] {
            if value == 0 {
                return Err(key_error(key, POSITIVE));
            }
        }
        Ok(())
    }

    /// The mesh address, `None` for a single node.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        optional_addr(&self.cluster.listen)
    }
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|e| key_error(key, format!("{text:?} is not an IP:port address: {e}")))
}

/// A listener's addresses: one `"IP:port"` or a list of them. The default pairs an IPv4
/// and an IPv6 wildcard, two sockets as Prosody's `interfaces = { "*", "::" }` (ejabberd
/// takes one `ip` per listener), since `localhost` resolves to `::1` first on many systems.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "an \"IP:port\" address or a list of them")]
pub enum Listen {
    One(String),
    Many(Vec<String>),
}

impl Listen {
    /// The configured texts; `""` is none.
    fn texts(&self) -> &[String] {
        match self {
            Listen::One(text) if text.is_empty() => &[],
            Listen::One(text) => std::slice::from_ref(text),
            Listen::Many(texts) => texts,
        }
    }

    fn check(&self, key: &str) -> Result<(), ConfigError> {
        self.texts().iter().try_for_each(|text| parse_addr(key, text).map(drop))
    }

    /// The addresses (checked by `Config::load`).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.texts().iter().filter_map(|text| optional_addr(text)).collect()
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.texts().join(", "))
    }
}

/// An optional listen address already checked by `Config::load`; "" is `None`.
fn optional_addr(text: &str) -> Option<SocketAddr> {
    (!text.is_empty()).then(|| {
        text.parse()
            .expect("listen address checked by Config::load")
    })
}

impl Config {
    /// The metrics endpoint address, `None` when disabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        optional_addr(&self.metrics.listen)
    }
}

impl Limits {
    pub fn handshake_timeout_duration(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub fn idle_timeout_duration(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn ping_interval_duration(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn example_is_exactly_the_defaults() {
        assert_eq!(Config::parse(EXAMPLE).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::load(None).unwrap(), Config::default());
    }

    #[test]
    fn readme_shows_the_example_as_is() {
        let readme = include_str!("../README.md");
        assert!(readme.contains(&format!("```toml\n{EXAMPLE}```")), "README's configuration block differs from config::EXAMPLE");
    }

    #[test]
    fn upload_urls_name_the_https_listener_when_there_is_one() {
        let url = |text: &str| Config::parse(text).unwrap().upload_base_url();
        assert_eq!(url("[http]\nlisten = \"0.0.0.0:5280\""), "http://localhost:5280");
        assert_eq!(url("[http]\nlisten = \"127.0.0.1:5280\"\nbehind_tls_proxy = true"), "https://127.0.0.1:5280");
        assert_eq!(url("[http]\nlisten = \"0.0.0.0:5280\"\ntls_listen = \"0.0.0.0:5281\""), "https://localhost:5281");
        assert_eq!(url("[http]\ntls_listen = \"0.0.0.0:5281\"\n[upload]\npublic_url = \"https://up.example/\""), "https://up.example");
        assert!(Config::parse("[http]\ntls_listen = \"0.0.0.0:5281\"").unwrap().upload_domain().is_some(), "served on HTTPS alone");
        assert!(Config::parse("").unwrap().upload_domain().is_none(), "no HTTP listener, no upload service");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c =
            Config::parse("domain = \"Example.ORG\"\n[limits]\nroster_items_max = 5\n").unwrap();
        assert_eq!(c.domain, "example.org");
        assert_eq!(c.limits.roster_items_max, 5);
        assert_eq!(c.limits.stanza_bytes_max, 262_144);
        assert_eq!(c.c2s.listen.addrs(), ["0.0.0.0:5222".parse().unwrap(), "[::]:5222".parse().unwrap()]);
        assert_eq!(c.c2s_direct_tls.listen.addrs(), ["0.0.0.0:5223".parse().unwrap(), "[::]:5223".parse().unwrap()]);
        assert_eq!(c.limits.ping_interval_duration(), Duration::from_secs(120));
        assert_eq!(c.metrics_addr(), None);
    }

    #[test]
    fn optional_listeners() {
        let text = "[c2s]\nlisten = \"127.0.0.1:5222\"\n[c2s_direct_tls]\nlisten = \"\"\n[metrics]\nlisten = \"[::1]:9464\"\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.c2s.listen.addrs(), ["127.0.0.1:5222".parse().unwrap()], "a single string still works");
        assert_eq!(c.c2s_direct_tls.listen.addrs(), []);
        assert_eq!(Config::parse("[c2s_direct_tls]\nlisten = []\n").unwrap().c2s_direct_tls.listen.addrs(), []);
        assert_eq!(c.metrics_addr(), Some("[::1]:9464".parse().unwrap()));
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = error_of("[limits]\nstanza_bytes_max = \"big\"\n");
        assert!(
            e.starts_with("limits.stanza_bytes_max: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = error_of("[limits]\nstanza_bytes = 5\n");
        assert!(e.starts_with("limits.stanza_bytes: unknown field"), "{e}");
        let e = error_of("colour = 1\n");
        assert!(e.starts_with("colour: unknown field"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            ("domain = \"a b@c\"", "domain: "),
            ("[c2s]\nlisten = \"nowhere\"", "c2s.listen: "),
            ("[c2s]\nlisten = [\"127.0.0.1:5222\", \"nowhere\"]", "c2s.listen: "),
            ("[c2s]\nlisten = []", "c2s.listen: needs at least one address"),
            (
                "[c2s_direct_tls]\nlisten = \":5223\"",
                "c2s_direct_tls.listen: ",
            ),
            ("[metrics]\nlisten = \"localhost:9464\"", "metrics.listen: "),
            (
                "[limits]\nuser_mailbox_messages_max = 0",
                "limits.user_mailbox_messages_max: must be greater than 0",
            ),
            ("[c2s]\nplain_without_tls = true", "c2s.plain_without_tls: "),
            ("[tls]\ncert = \"a.pem\"", "tls: "),
            (
                "[storage]\nbackend = \"mysql\"",
                "storage.backend: unknown variant",
            ),
            (
                "[storage]\nbackend = \"postgres\"",
                "storage.postgres_url: needed by backend",
            ),
            (
                "[cluster]\nlisten = \"127.0.0.1:5270\"\nsecret = \"short\"",
                "cluster.secret: at least 16 bytes",
            ),
            (
                "[cluster]\nlisten = \"127.0.0.1:5270\"\nsecret = \"0123456789abcdef\"",
                "storage.backend: a cluster's nodes share one store",
            ),
            (
                "[cluster]\nlisten = \"127.0.0.1:5270\"\nseeds = [\"nowhere\"]",
                "cluster.seeds: ",
            ),
            (
                "[storage]\nscram_iterations = 0",
                "storage.scram_iterations: must be greater than 0",
            ),
            (
                "[limits]\nidle_timeout_secs = 0",
                "limits.idle_timeout_secs: must be greater than 0",
            ),
        ];
        for (text, prefix) in cases {
            let e = error_of(text);
            assert!(e.starts_with(prefix), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let e = error_of("domain = \n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let e = Config::load(Some(Path::new("/nonexistent/martlet.toml"))).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/martlet.toml: "),
            "{e}"
        );
    }

    #[test]
    fn cores_effective_is_never_zero() {
        assert!(Config::default().cores_effective() >= 1);
        let c = Config {
            cores: 3,
            ..Config::default()
        };
        assert_eq!(c.cores_effective(), 3);
    }
}
