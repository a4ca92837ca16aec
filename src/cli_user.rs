//! `martlet user add|del|passwd|list|bulk-add`: account management from the shell.
//! With the server running, the command goes through its admin socket (the embedded store
//! admits one process); with the server stopped, straight to the storage files. Both paths
//! run the same [`crate::admin::execute`].

use std::io::{BufRead, IsTerminal, Write};

use futures_lite::future::block_on;

use crate::admin::{self, Request};
use crate::config::Config;
use crate::storage::Storage;

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Create an account. Without PASSWORD, reads one line from stdin
    /// (safer: arguments are visible to other local users).
    Add {
        jid: String,
        password: Option<String>,
    },
    /// Delete an account with its roster and offline messages.
    Del { jid: String },
    /// Set a new password. Without PASSWORD, reads one line from stdin.
    Passwd {
        jid: String,
        password: Option<String>,
    },
    /// Print every account, one per line, sorted.
    List,
    /// Create PREFIX1..PREFIXn@domain with one password (load tests, staging); existing
    /// accounts are left as they are.
    BulkAdd {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 1)]
        first: u32,
        #[arg(long)]
        password: String,
    },
}

pub fn run(cfg: &Config, cmd: UserCmd) -> Result<(), String> {
    let request = match cmd {
        UserCmd::Add { jid, password } => {
            let jid = account_jid(&jid, &cfg.domain)?;
            let password = password_or_stdin(password, &jid)?;
            Request::Add { jid, password }
        }
        UserCmd::Del { jid } => Request::Del { jid: account_jid(&jid, &cfg.domain)? },
        UserCmd::Passwd { jid, password } => {
            let jid = account_jid(&jid, &cfg.domain)?;
            let password = password_or_stdin(password, &jid)?;
            Request::Passwd { jid, password }
        }
        UserCmd::List => Request::List,
        UserCmd::BulkAdd { prefix, count, first, password } => {
            let jids = (first..first + count)
                .map(|i| account_jid(&format!("{prefix}{i}"), &cfg.domain))
                .collect::<Result<_, _>>()?;
            Request::BulkAdd { jids, password }
        }
    };
    let reply = match admin::call(cfg, &request) {
        Some(Ok(reply)) => reply,
        // A server that was stopping as we called (its socket took the connection, then
        // went): carry the request out on the store, which it no longer holds. Were it
        // still running, opening the store would say so.
        Some(Err(e)) if server_went_away(&e) => offline(cfg, request)?,
        Some(Err(e)) => return Err(format!("admin socket {}: {e}", admin::socket_path(cfg).display())),
        None => offline(cfg, request)?,
    };
    if !reply.ok {
        return Err(reply.text);
    }
    if !reply.text.is_empty() {
        println!("{}", reply.text);
    }
    Ok(())
}

fn server_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

fn offline(cfg: &Config, request: Request) -> Result<admin::Reply, String> {
    Ok(block_on(admin::execute(&Storage::open(&cfg.storage).map_err(|e| e.to_string())?, request)))
}

pub fn account_jid(input: &str, domain: &str) -> Result<String, String> {
    let full = if input.contains(['@', '/']) {
        input.to_owned()
    } else {
        format!("{input}@{domain}")
    };
    let jid = jid::Jid::new(&full).map_err(|e| format!("{input:?} is not a valid JID: {e}"))?;
    if jid.resource().is_some() {
        return Err(format!("{input:?}: give a bare JID, without /resource"));
    }
    if jid.node().is_none() {
        return Err(format!("{input:?}: missing the user part (user@{domain})"));
    }
    if jid.domain().as_str() != domain {
        return Err(format!("{input:?}: this server's domain is {domain}"));
    }
    Ok(jid.as_str().to_owned())
}

/// The password argument, or else one line of stdin (prompting on a terminal).
fn password_or_stdin(argument: Option<String>, jid: &str) -> Result<String, String> {
    let password = match argument {
        Some(password) => password,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password for {jid}: ");
                // The prompt has no newline, so it would sit in the buffer.
                let _ = std::io::stderr().flush();
            }
            read_line(&mut stdin.lock())?
        }
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}

/// One line without its line ending; an error at end of input.
fn read_line(input: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .map_err(|e| format!("reading password from stdin: {e}"))?;
    if read == 0 {
        return Err("no password: give it as an argument or on stdin".into());
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: UserCmd,
    }

    #[test]
    fn arguments_parse() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["user", "add", "alice"]).unwrap();
        assert!(matches!(cli.cmd, UserCmd::Add { jid, password: None } if jid == "alice"));
        let cli = Cli::try_parse_from(["user", "passwd", "alice", "pw"]).unwrap();
        assert!(matches!(cli.cmd, UserCmd::Passwd { password: Some(p), .. } if p == "pw"));
        assert!(Cli::try_parse_from(["user", "del"]).is_err());
    }

    #[test]
    fn account_jid_completes_and_checks() {
        assert_eq!(
            account_jid("alice", "localhost").unwrap(),
            "alice@localhost"
        );
        assert_eq!(
            account_jid("Alice@LocalHost", "localhost").unwrap(),
            "alice@localhost"
        );
        for (input, error) in [
            ("alice@example.org", "domain is localhost"),
            ("alice@localhost/phone", "bare JID"),
            ("@localhost", "not a valid JID"),
            ("a b", "not a valid JID"),
            ("localhost/x", "bare JID"),
        ] {
            let e = account_jid(input, "localhost").unwrap_err();
            assert!(e.contains(error), "{input:?} gave {e:?}");
        }
    }

    #[test]
    fn read_line_strips_the_line_ending() {
        assert_eq!(
            read_line(&mut "s3cret\r\nrest".as_bytes()).unwrap(),
            "s3cret"
        );
        assert_eq!(read_line(&mut "s3cret".as_bytes()).unwrap(), "s3cret");
        assert!(read_line(&mut "".as_bytes()).is_err());
    }

    #[test]
    fn commands_manage_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.storage.path = dir.path().to_owned();
        cfg.storage.scram_iterations = 16;
        let add = |jid: &str| UserCmd::Add {
            jid: jid.into(),
            password: Some("pw".into()),
        };

        run(&cfg, add("alice")).unwrap();
        run(&cfg, add("bob@localhost")).unwrap();
        assert_eq!(
            run(&cfg, add("alice@localhost")).unwrap_err(),
            "alice@localhost exists"
        );
        let passwd = UserCmd::Passwd {
            jid: "alice".into(),
            password: Some("new".into()),
        };
        run(&cfg, passwd).unwrap();
        let empty = UserCmd::Passwd {
            jid: "alice".into(),
            password: Some(String::new()),
        };
        assert_eq!(run(&cfg, empty).unwrap_err(), "empty password");
        run(&cfg, UserCmd::List).unwrap();
        run(
            &cfg,
            UserCmd::Del {
                jid: "alice".into(),
            },
        )
        .unwrap();
        let e = run(
            &cfg,
            UserCmd::Del {
                jid: "alice".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e, "alice@localhost does not exist");

        let storage = Storage::open(&cfg.storage).unwrap();
        assert_eq!(block_on(storage.list_users()).unwrap(), ["bob@localhost"]);
    }
}
