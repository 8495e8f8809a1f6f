//! `fanout inbox create|list|rotate|delete`: developers' inboxes created at run time, through
//! the admin API. A token is printed once (and, with `--save`, written where `fanout listen
//! --name` finds it); the proxy keeps only its digest.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Subcommand;
use http::Method;

use super::ops::{call, call_with_body, encode_segment, print_json, AdminArgs};
use crate::wire::admin::{CreateInbox, InboxCredentials, InboxDeleted, InboxesList};

#[derive(Subcommand, Debug)]
pub enum InboxCommand {
    /// Create a developer's inbox; prints its token and webhook secret, once.
    Create {
        name: String,
        /// Events older than this are dead-lettered rather than offered (default: retry.max_age).
        #[arg(long)]
        max_age: Option<String>,
        /// A target or failover group that takes its events while nobody listens.
        #[arg(long)]
        offline_fallback: Option<String>,
        /// How long nobody must have listened first (default 10m).
        #[arg(long, requires = "offline_fallback")]
        offline_after: Option<String>,
        /// Also write the token where `fanout listen --name NAME` reads it.
        #[arg(long)]
        save: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every inbox, of routing.yaml and created at run time, with who listens.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A new token and secret for an inbox; the old ones stop working. Its queue stays.
    Rotate {
        name: String,
        #[arg(long)]
        save: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an inbox created at run time; its queued events go to the dead letters.
    Delete {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub async fn run(command: InboxCommand) -> anyhow::Result<()> {
    match command {
        InboxCommand::Create { name, max_age, offline_fallback, offline_after, save, admin } => {
            let ask = CreateInbox { name, max_age, offline_fallback, offline_after };
            let body = Bytes::from(serde_json::to_vec(&ask)?);
            let created: InboxCredentials = call_with_body(&admin, Method::POST, "/inboxes", &[], body).await?;
            credentials(&admin, &created, save, "created")
        }
        InboxCommand::Rotate { name, save, admin } => {
            let path = format!("/inboxes/{}/rotate", encode_segment(&name));
            let rotated: InboxCredentials = call(&admin, Method::POST, &path, &[]).await?;
            credentials(&admin, &rotated, save, "rotated: the old token and secret no longer work")
        }
        InboxCommand::Delete { name, admin } => {
            let path = format!("/inboxes/{}", encode_segment(&name));
            let deleted: InboxDeleted = call(&admin, Method::DELETE, &path, &[]).await?;
            if admin.json {
                print_json(&deleted);
            } else {
                println!(
                    "inbox {name} deleted; its {} queued event(s) went to the dead letters (`fanout dead-letters --target {name}`)",
                    deleted.queued_to_dead_letters
                );
            }
            Ok(())
        }
        InboxCommand::List { admin } => {
            let list: InboxesList = call(&admin, Method::GET, "/inboxes", &[]).await?;
            if admin.json {
                print_json(&list);
                return Ok(());
            }
            println!("{:<20} {:<10} {:<10} {:>9} {:>7}", "INBOX", "FROM", "STATE", "LISTENERS", "QUEUED");
            for i in list.inboxes {
                let from = if i.created_at_run_time { "created" } else { "config" };
                let state = if i.online { "listening" } else { "offline" };
                println!("{:<20} {from:<10} {state:<10} {:>9} {:>7}", i.name, i.listeners, i.queued);
            }
            Ok(())
        }
    }
}

fn credentials(admin: &AdminArgs, c: &InboxCredentials, save: bool, what: &str) -> anyhow::Result<()> {
    // Printed before anything that could fail: the token is never shown again.
    if admin.json {
        print_json(c);
    } else {
        println!("inbox {} {what}.", c.inbox);
        println!("  token:  {}   (shown once; `fanout listen` opens the inbox with it)", c.token);
        println!("  secret: {}   (the local app verifies Stripe-Signature with it)", c.secret);
    }
    let saved = match save.then(|| save_token(&c.inbox, &c.token)).transpose() {
        Ok(saved) => saved,
        Err(e) => {
            eprintln!("warning: the token was not saved ({e:#}); keep the one printed above");
            None
        }
    };
    if admin.json {
        return Ok(());
    }
    match saved {
        Some(path) => println!(
            "token saved to {}; the developer runs:\n  fanout listen --name {} --proxy $FANOUT_PROXY_URL --forward-to http://localhost:3000/webhook",
            path.display(),
            c.inbox
        ),
        None => println!(
            "the developer runs:\n  FANOUT_INBOX_TOKEN=<token> fanout listen --proxy $FANOUT_PROXY_URL --forward-to http://localhost:3000/webhook"
        ),
    }
    Ok(())
}

/// Where `fanout inbox create --save` writes a token and `fanout listen --name` reads it:
/// `$FANOUT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/fanout`, else `~/.config/fanout`.
pub fn token_path(name: &str) -> anyhow::Result<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = env("FANOUT_CONFIG_DIR")
        .or_else(|| env("XDG_CONFIG_HOME").map(|d| d.join("fanout")))
        .or_else(|| env("HOME").map(|h| h.join(".config").join("fanout")))
        .context("no directory for the token: set FANOUT_CONFIG_DIR (or HOME)")?;
    Ok(dir.join("inboxes").join(format!("{name}.token")))
}

fn save_token(name: &str, token: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_path(name)?;
    let dir = path.parent().context("a token path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Readable by its owner only, like an SSH key.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(token.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
