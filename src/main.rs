//! The `martlet` command: `serve`, `user add|del|passwd|list`, `cluster status|owner`,
//! `room list|info|create|destroy`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use martlet::config::Config;

// mimalloc: per-thread heaps suit thread-per-core (no allocator lock shared by cores) and
// keep fragmentation low with millions of small per-session allocations. The
// `system-allocator` feature leaves it out, for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "martlet", version, about = "Thread-per-core XMPP server")]
struct Cli {
    /// TOML configuration file; without one, built-in defaults serve `localhost`.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage accounts.
    #[command(subcommand)]
    User(martlet::cli_user::UserCmd),
    /// Load and validate the configuration, then exit.
    CheckConfig,
    /// Cluster membership, from the running server.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// XEP-0045 rooms, through the running server (any node of a cluster).
    #[command(subcommand)]
    Room(RoomCmd),
}

#[derive(Subcommand)]
enum RoomCmd {
    /// Every persistent room, and the temporary rooms this node owns: JID, kind, visibility, name.
    List,
    /// A room's configuration, occupants and affiliations. ROOM: `name` or `name@<muc domain>`.
    Info { room: String },
    /// A persistent room, open at once, with OWNER (a bare JID) as its owner.
    Create {
        room: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Left out of the public room list (disco#items).
        #[arg(long)]
        hidden: bool,
    },
    /// Destroy a room: its occupants leave, told the reason.
    Destroy {
        room: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Members, their state (up, suspect, down) and each one's share of the ring.
    Status,
    /// The node whose ring arc holds a bare JID: where its UserChannel lives.
    Owner { jid: String },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("martlet: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => martlet::server::serve(cfg),
        Command::User(cmd) => martlet::cli_user::run(&cfg, cmd),
        Command::Cluster(ClusterCmd::Status) => running_server_request(&cfg, martlet::admin::Request::ClusterStatus),
        Command::Cluster(ClusterCmd::Owner { jid }) => running_server_request(&cfg, martlet::admin::Request::ClusterOwner { jid }),
        Command::Room(cmd) => running_server_request(&cfg, room_request(cmd)),
        Command::CheckConfig => {
            println!("configuration ok: serving {} on {}", cfg.domain, cfg.c2s.listen);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("martlet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn room_request(cmd: RoomCmd) -> martlet::admin::Request {
    use martlet::admin::Request;
    match cmd {
        RoomCmd::List => Request::RoomList,
        RoomCmd::Info { room } => Request::RoomInfo { room },
        RoomCmd::Create { room, owner, name, hidden } => Request::RoomCreate { room, owner, name, public: !hidden },
        RoomCmd::Destroy { room, reason } => Request::RoomDestroy { room, reason },
    }
}

/// A request only a running server answers, over its admin socket.
fn running_server_request(cfg: &Config, request: martlet::admin::Request) -> Result<(), String> {
    let path = martlet::admin::socket_path(cfg);
    match martlet::admin::call(cfg, &request) {
        None => Err(format!("no server answers on {}: is it running?", path.display())),
        Some(Err(e)) => Err(format!("admin socket {}: {e}", path.display())),
        Some(Ok(reply)) if reply.ok => {
            print!("{}", reply.text);
            Ok(())
        }
        Some(Ok(reply)) => Err(reply.text),
    }
}
