//! `do-cli`: look at and change Durable Objects data, offline on a data
//! directory no runtime has open (`--data DIR`), or through a running
//! server's admin API (`--server URL --token TOKEN`, see the gateway's
//! `admin` option).
//!
//! ```text
//! do-cli --data ./counter-data namespaces
//! do-cli --data ./counter-data list Counter
//! do-cli --data ./counter-data show Counter alice
//! do-cli --data ./counter-data export Counter --out counters.jsonl
//! do-cli --server http://127.0.0.1:8787 --token s3cret import counters.jsonl
//! do-cli --data ./counter-data delete Counter alice
//! do-cli --data ./new-data rebuild --nats nats://10.0.0.1:4222 --stream APP
//! do-cli cluster status --etcd http://10.0.0.5:2379
//! ```
//!
//! The logic lives here, with its input and output passed in, so it can be
//! tested in process; `main.rs` only wires it to the terminal.

mod remote;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use do_runtime::admin::{DataDir, ImportOptions, Record};
use do_runtime::gateway::admin::{dump_json, group_by_object, parse_records};
use do_runtime::{Error, ListIds};
use serde_json::Value;

/// Command-line access to Durable Objects data.
#[derive(Debug, Parser)]
#[command(name = "do-cli", version, about, long_about = None)]
pub struct Cli {
    /// Work on this data directory (no runtime may have it open).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "server")]
    pub data: Option<PathBuf>,
    /// Work through this running server's admin API, e.g. http://127.0.0.1:8787.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The admin API's bearer token (with --server).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The deployment secret (as `secret --reveal` prints it) that an
    /// import into a new directory makes it with, so that every id keeps
    /// its text; an existing directory must have been made with it.
    #[arg(long, global = true, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the namespaces (classes).
    Namespaces,
    /// List the objects of a namespace that hold or held data.
    List {
        /// The class name.
        class: String,
        /// Objects per page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this cursor (printed at the end of a page).
        #[arg(long)]
        cursor: Option<String>,
        /// Every page, not just one.
        #[arg(long)]
        all: bool,
    },
    /// Show an object's keys, values (decoded where possible, hex otherwise) and alarm.
    Show {
        /// The class name.
        class: String,
        /// The object's id (64 hex characters) or name.
        object: String,
    },
    /// Export an object, or a whole namespace, as JSON lines.
    Export {
        /// The class name.
        class: String,
        /// One object's id or name; every object of the namespace if absent.
        object: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Import JSON lines written by `export`.
    Import {
        /// The file to read, `-` for standard input.
        file: PathBuf,
        /// Objects exported under another deployment secret without a
        /// name keep their identity under a new id text (named ones are
        /// always re-made from their name); without this they are refused.
        #[arg(long)]
        keep_unique_ids: bool,
    },
    /// Rebuild the data directory (--data; empty, or one the log was
    /// written from) from a replicated log on NATS JetStream: its
    /// deployment secret and every object's state. Claims nothing: a
    /// runtime writing the log goes on.
    Rebuild {
        /// The NATS servers, comma-separated, e.g. nats://10.0.0.1:4222.
        #[arg(long, value_name = "URLS")]
        nats: String,
        /// The stream.
        #[arg(long, default_value = "DO")]
        stream: String,
        /// The stream's shard count (as the runtimes that write it have).
        #[arg(long, default_value_t = 1024)]
        shards: u32,
    },
    /// Print the data directory's deployment secret (--data), for
    /// `--secret-file` or `RuntimeBuilder::deployment_secret`: with it
    /// another directory makes the same ids. Needs --reveal.
    Secret {
        /// Yes, print it: whoever has it can make this deployment's ids.
        #[arg(long)]
        reveal: bool,
    },
    /// Look at a cluster of runtimes, as etcd holds it.
    Cluster {
        /// What to look at.
        #[command(subcommand)]
        action: ClusterCommand,
    },
    /// Delete an object's data and alarm.
    Delete {
        /// The class name.
        class: String,
        /// The object's id (64 hex characters) or name.
        object: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// What to look at in a cluster.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members (address, shards owned and placed: a member that owns other
    /// than its placement is catching up), shards without an owner, shards
    /// not where placement puts them; with --shards, every shard's owner and
    /// epoch.
    Status {
        /// etcd's endpoints, comma-separated, e.g. http://10.0.0.5:2379.
        #[arg(long, value_name = "URLS")]
        etcd: String,
        /// The cluster's key prefix in etcd.
        #[arg(long, default_value = "do")]
        prefix: String,
        /// Also list every shard with its owner and epoch.
        #[arg(long)]
        shards: bool,
    },
}

/// Prints the cluster `view` under `prefix`.
fn print_cluster(
    prefix: &str,
    view: &do_runtime::ClusterView,
    shards: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let Some(count) = view.shards else {
        return writeln!(out, "no cluster under the prefix {prefix:?}");
    };
    writeln!(
        out,
        "cluster {prefix:?}: {count} shards, {} members, {} unowned, {} misplaced",
        view.members.len(),
        view.unowned,
        view.misplaced
    )?;
    writeln!(
        out,
        "{:<24} {:<24} {:>6} {:>6}",
        "member", "address", "owned", "placed"
    )?;
    for member in &view.members {
        let lagging = if member.owned == member.placed {
            ""
        } else {
            "  (moving)"
        };
        writeln!(
            out,
            "{:<24} {:<24} {:>6} {:>6}{lagging}",
            member.name, member.address, member.owned, member.placed
        )?;
    }
    if shards {
        writeln!(out, "{:>6} {:<24} {:>12}", "shard", "owner", "epoch")?;
        for shard in 0..count {
            match view.owners.get(&shard) {
                Some(owner) => writeln!(out, "{shard:>6} {:<24} {:>12}", owner.node, owner.epoch)?,
                None => writeln!(out, "{shard:>6} {:<24} {:>12}", "-", "-")?,
            }
        }
    }
    Ok(())
}

/// Where the data is.
enum Backend {
    Offline(DataDir),
    Remote(remote::Admin),
}

/// An object as a listing shows it.
struct Listed {
    id: String,
    name: Option<String>,
    has_data: bool,
}

/// Runs the tool with `args` (the first is the program name); returns the
/// exit code. Output goes to `stdout`, messages to `stderr`; `stdin`
/// answers the delete confirmation (and is read by `import -`).
pub fn run<I, S>(
    args: I,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            let _ = if code == 0 {
                write!(stdout, "{text}")
            } else {
                write!(stderr, "{text}")
            };
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(stderr, "error: cannot start: {e}");
            return 1;
        }
    };
    match runtime.block_on(execute(cli, stdin, stdout)) {
        Ok(()) => 0,
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            let _ = writeln!(stderr, "error: {line}");
            1
        }
    }
}

async fn execute(cli: Cli, stdin: &mut dyn BufRead, stdout: &mut dyn Write) -> Result<(), Error> {
    if let Command::Rebuild {
        nats,
        stream,
        shards,
    } = &cli.command
    {
        let Some(dir) = cli.data.clone() else {
            return Err(Error::BadRequest(
                "rebuild needs the directory to rebuild: --data DIR".into(),
            ));
        };
        let config = do_runtime::ReplicaConfig::new(nats.split(','))
            .stream(stream.as_str())
            .shards(*shards);
        // It blocks on threads of its own, not on this one.
        let read = do_runtime::admin::rebuild_from_log(&dir, config)?;
        return writeln!(
            stdout,
            "rebuilt {} from {read} entries of the log",
            dir.display()
        )
        .map_err(|e| Error::Setup(format!("cannot write: {e}")));
    }
    if let Command::Cluster {
        action:
            ClusterCommand::Status {
                etcd,
                prefix,
                shards,
            },
    } = &cli.command
    {
        let endpoints: Vec<String> = etcd.split(',').map(str::to_owned).collect();
        let view =
            do_runtime::inspect_cluster(&endpoints, prefix, std::time::Duration::from_secs(5))
                .await
                .map_err(|e| Error::Setup(format!("cannot read the cluster: {e}")))?;
        return print_cluster(prefix, &view, *shards, stdout)
            .map_err(|e| Error::Setup(format!("cannot write: {e}")));
    }
    let backend = match (&cli.data, &cli.server) {
        // An import may restore into a new directory.
        (Some(dir), None) if matches!(cli.command, Command::Import { .. }) => {
            let secret =
                match &cli.secret_file {
                    Some(file) => Some(std::fs::read(file).map_err(|e| {
                        Error::Setup(format!("cannot read {}: {e}", file.display()))
                    })?),
                    None => None,
                };
            Backend::Offline(DataDir::open_or_create(dir, secret.as_deref())?)
        }
        (Some(dir), None) => Backend::Offline(DataDir::open(dir)?),
        (None, Some(url)) => Backend::Remote(remote::Admin::new(url, cli.token.clone())?),
        _ => {
            return Err(Error::BadRequest(
                "say where the data is: --data DIR, or --server URL --token TOKEN".into(),
            ));
        }
    };
    let out = |stdout: &mut dyn Write, line: String| {
        writeln!(stdout, "{line}").map_err(|e| Error::Setup(format!("cannot write: {e}")))
    };
    match cli.command {
        Command::Secret { reveal } => match (&backend, reveal) {
            (Backend::Offline(data), true) => out(stdout, data.reveal_deployment_secret())?,
            (Backend::Offline(_), false) => {
                return Err(Error::BadRequest(
                    "the deployment secret is printed only with --reveal: whoever has it can make this deployment's ids".into(),
                ));
            }
            (Backend::Remote(_), _) => {
                return Err(Error::Unsupported(
                    "the deployment secret is read from a data directory (--data), never over the network".into(),
                ));
            }
        },
        Command::Namespaces => {
            for class in backend.namespaces().await? {
                out(stdout, class)?;
            }
        }
        Command::List {
            class,
            limit,
            cursor,
            all,
        } => {
            let mut cursor = cursor;
            loop {
                let (objects, next) = backend.list(&class, cursor.clone(), limit).await?;
                for o in objects {
                    let data = if o.has_data { "data" } else { "no data" };
                    out(
                        stdout,
                        format!("{}  {}  {data}", o.id, o.name.as_deref().unwrap_or("-")),
                    )?;
                }
                match next {
                    Some(next) if all => cursor = Some(next),
                    Some(next) => {
                        out(stdout, format!("# more: --cursor {next}"))?;
                        break;
                    }
                    None => break,
                }
            }
        }
        Command::Show { class, object } => {
            let shown = backend.show(&class, &object).await?;
            out(
                stdout,
                format!("id: {}", shown["id"].as_str().unwrap_or("")),
            )?;
            if let Some(name) = shown["name"].as_str() {
                out(stdout, format!("name: {name}"))?;
            }
            match shown["alarm"].as_u64() {
                Some(ms) => out(stdout, format!("alarm: {ms} (ms since the Unix epoch)"))?,
                None => out(stdout, "alarm: none".into())?,
            }
            let entries = shown["entries"].as_array().cloned().unwrap_or_default();
            out(stdout, format!("keys: {}", entries.len()))?;
            for entry in entries {
                let key = entry["key"].as_str().unwrap_or("");
                let value = match entry["text"].as_str() {
                    Some(text) => format!("{text:?}"),
                    None => format!("0x{}", entry["value"].as_str().unwrap_or("")),
                };
                out(stdout, format!("  {key} = {value}"))?;
            }
        }
        Command::Export {
            class,
            object,
            out: file,
        } => {
            let objects = match object {
                Some(object) => vec![object],
                None => backend.all_ids(&class).await?,
            };
            let bar = progress(objects.len() as u64, "exporting");
            let mut lines = Vec::new();
            for object in objects {
                for record in backend.export(&class, &object).await? {
                    let line =
                        serde_json::to_string(&record).map_err(|e| Error::Codec(e.to_string()))?;
                    lines.push(line);
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            match file {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| Error::Setup(format!("cannot write {}: {e}", path.display())))?,
                None => write!(stdout, "{text}")
                    .map_err(|e| Error::Setup(format!("cannot write: {e}")))?,
            }
        }
        Command::Import {
            file,
            keep_unique_ids,
        } => {
            let options = ImportOptions::new().keep_unique_ids(keep_unique_ids);
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                stdin
                    .read_to_string(&mut text)
                    .map_err(|e| Error::Setup(format!("cannot read standard input: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Error::Setup(format!("cannot read {}: {e}", file.display())))?
            };
            let groups = group_by_object(parse_records(&text)?);
            let bar = progress(groups.len() as u64, "importing");
            let mut written = 0;
            for records in groups {
                written += backend.import(records, options).await?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            out(stdout, format!("imported {written} keys and alarms"))?;
        }
        // Done above: it needs no backend.
        Command::Rebuild { .. } | Command::Cluster { .. } => {}
        Command::Delete { class, object, yes } => {
            if !yes {
                write!(
                    stdout,
                    "delete every key and the alarm of {class} {object}? [y/N] "
                )
                .map_err(|e| Error::Setup(format!("cannot write: {e}")))?;
                let _ = stdout.flush();
                let mut answer = String::new();
                let _ = stdin.read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    out(stdout, "not deleted".into())?;
                    return Ok(());
                }
            }
            let deleted = backend.delete(&class, &object).await?;
            out(stdout, format!("deleted {deleted} keys"))?;
        }
    }
    if let Backend::Offline(data) = backend {
        data.close();
    }
    Ok(())
}

fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} objects")
    {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

impl Backend {
    async fn namespaces(&self) -> Result<Vec<String>, Error> {
        match self {
            Backend::Offline(data) => Ok(data.namespaces()),
            Backend::Remote(admin) => {
                let body = admin.get_json("/admin/namespaces").await?;
                Ok(body["namespaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n["class"].as_str().map(str::to_owned))
                    .collect())
            }
        }
    }

    async fn list(
        &self,
        class: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Listed>, Option<String>), Error> {
        match self {
            Backend::Offline(data) => {
                let mut options = ListIds::new().limit(limit);
                if let Some(cursor) = cursor {
                    options = options.cursor(cursor);
                }
                let page = data.list_ids(class, options)?;
                let objects = page
                    .objects
                    .into_iter()
                    .map(|o| Listed {
                        id: o.id.to_string(),
                        name: o.name,
                        has_data: o.has_stored_data,
                    })
                    .collect();
                Ok((objects, page.cursor))
            }
            Backend::Remote(admin) => {
                let mut path = format!(
                    "/admin/namespaces/{}/objects?limit={limit}",
                    remote::escape(class)
                );
                if let Some(cursor) = cursor {
                    path.push_str(&format!("&cursor={}", remote::escape(&cursor)));
                }
                let body = admin.get_json(&path).await?;
                let objects = body["objects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| Listed {
                        id: o["id"].as_str().unwrap_or("").to_owned(),
                        name: o["name"].as_str().map(str::to_owned),
                        has_data: o["hasStoredData"].as_bool().unwrap_or(false),
                    })
                    .collect();
                Ok((objects, body["cursor"].as_str().map(str::to_owned)))
            }
        }
    }

    /// The ids of every object of `class`.
    async fn all_ids(&self, class: &str) -> Result<Vec<String>, Error> {
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let (objects, next) = self.list(class, cursor, 1000).await?;
            ids.extend(objects.into_iter().map(|o| o.id));
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(ids),
            }
        }
    }

    async fn show(&self, class: &str, object: &str) -> Result<Value, Error> {
        match self {
            Backend::Offline(data) => {
                let id = data.id(class, object)?;
                Ok(dump_json(&data.show(class, &id)?))
            }
            Backend::Remote(admin) => {
                admin
                    .get_json(&format!(
                        "/admin/namespaces/{}/objects/{}",
                        remote::escape(class),
                        remote::escape(object)
                    ))
                    .await
            }
        }
    }

    async fn export(&self, class: &str, object: &str) -> Result<Vec<Record>, Error> {
        match self {
            Backend::Offline(data) => {
                let id = data.id(class, object)?;
                Ok(data.show(class, &id)?.records(class))
            }
            Backend::Remote(admin) => {
                let text = admin
                    .get_text(&format!(
                        "/admin/namespaces/{}/objects/{}/export",
                        remote::escape(class),
                        remote::escape(object)
                    ))
                    .await?;
                parse_records(&text)
            }
        }
    }

    async fn import(&self, records: Vec<Record>, options: ImportOptions) -> Result<usize, Error> {
        match self {
            Backend::Offline(data) => data.import(&records, options).await,
            Backend::Remote(admin) => {
                let mut body = String::new();
                for record in &records {
                    body.push_str(
                        &serde_json::to_string(record).map_err(|e| Error::Codec(e.to_string()))?,
                    );
                    body.push('\n');
                }
                let path = if options.keep_unique_ids {
                    "/admin/import?keepUniqueIds=true"
                } else {
                    "/admin/import"
                };
                let answer = admin.post_json(path, body).await?;
                Ok(answer["written"].as_u64().unwrap_or(0) as usize)
            }
        }
    }

    async fn delete(&self, class: &str, object: &str) -> Result<usize, Error> {
        match self {
            Backend::Offline(data) => {
                let id = data.id(class, object)?;
                data.delete(class, &id).await
            }
            Backend::Remote(admin) => {
                let answer = admin
                    .delete_json(&format!(
                        "/admin/namespaces/{}/objects/{}",
                        remote::escape(class),
                        remote::escape(object)
                    ))
                    .await?;
                Ok(answer["deleted"].as_u64().unwrap_or(0) as usize)
            }
        }
    }
}
