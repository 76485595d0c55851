//! The `floe` command line: `floe serve` runs the database; every other
//! command is a client of a running server (`--url`, `$FLOE_URL`), printing
//! tables for people or the server's JSON with `--json`, and exiting
//! non-zero with the error on failure.

mod client;
mod import;
mod output;
mod serve;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use client::{Retry, Server, collection_path, escape};
use output::cell;

/// The command line.
#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "Floe: a serverless vector database on object storage"
)]
struct Cli {
    /// The server (client commands).
    #[arg(
        long,
        global = true,
        env = "FLOE_URL",
        default_value = "http://127.0.0.1:7700"
    )]
    url: String,
    /// The API key (client commands), sent as a bearer token.
    #[arg(long, global = true, env = "FLOE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the background indexer in one process.
    Serve {
        /// Address to listen on (overrides FLOE_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Directory for embedded data (overrides FLOE_DATA_DIR).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Serve without API keys on an address other than loopback
        /// (sets FLOE_ALLOW_UNAUTHENTICATED).
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// List, create, describe and drop collections.
    #[command(subcommand)]
    Collections(Collections),
    /// Load rows from Parquet, NumPy or JSON Lines files (local or s3://).
    Import(import::ImportArgs),
    /// Write a consistent snapshot of a collection as Parquet files under
    /// exports/<prefix>/ in its object store (and download them).
    Export(import::ExportArgs),
    /// Search a collection, or scan it with a filter.
    Query(QueryArgs),
    /// One row by id, with its vector and attributes.
    Get {
        /// The collection.
        collection: String,
        /// The row's id.
        id: String,
    },
    /// Delete rows by id or by filter.
    Delete {
        /// The collection.
        collection: String,
        /// Comma-separated ids.
        #[arg(long, conflicts_with = "filter", required_unless_present = "filter")]
        ids: Option<String>,
        /// A filter expression (`year < 2000`).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Write the log tail into segments and wait.
    Flush {
        /// The collection.
        collection: String,
    },
    /// Load a collection's index into the server's cache.
    Warm {
        /// The collection.
        collection: String,
    },
    /// Manage API keys (admin key needed).
    #[command(subcommand)]
    Keys(Keys),
}

#[derive(Subcommand)]
enum Collections {
    /// Every collection's name.
    List,
    /// Create a collection (an identical one already there is fine).
    Create {
        /// Its name: [a-z0-9][a-z0-9_-]{0,63}.
        name: String,
        /// Vector length.
        #[arg(long)]
        dimension: u32,
        /// l2, cosine or ip.
        #[arg(long, default_value = "cosine")]
        metric: String,
        /// u64 or string.
        #[arg(long, default_value = "u64")]
        id_type: String,
        /// An attribute as name:type (bool, i64, f64, string, string_list);
        /// repeat for more.
        #[arg(long = "attribute", value_name = "NAME:TYPE")]
        attributes: Vec<String>,
    },
    /// Configuration and statistics.
    Describe {
        /// The collection.
        name: String,
    },
    /// Drop a collection and all its data.
    Drop {
        /// The collection.
        name: String,
        /// Confirm: dropping cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct QueryArgs {
    /// The collection.
    collection: String,
    /// The query vector as JSON (`[0.1, 0.2, …]`); without it, a scan in id
    /// order of the rows matching --filter.
    #[arg(long)]
    vector: Option<String>,
    /// How many rows.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// A filter expression.
    #[arg(long)]
    filter: Option<String>,
    /// strong, eventual, or a write token (lsn).
    #[arg(long, default_value = "strong")]
    consistency: String,
    /// Print each row's vector too.
    #[arg(long)]
    include_vector: bool,
    /// Add what the query cost (requests, bytes, time per phase).
    #[arg(long)]
    explain: bool,
}

#[derive(Subcommand)]
enum Keys {
    /// Every key's record (never a secret).
    List,
    /// Create a key; its secret is printed only now.
    Create {
        /// A label.
        name: String,
        /// read, write or admin.
        #[arg(long)]
        role: String,
        /// Limit it to these collections or prefixes (`tenant-*`); repeat.
        #[arg(long = "collection")]
        collections: Vec<String>,
    },
    /// Revoke a key.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// Parses the command line and runs the command; on failure prints the
/// error and exits with status 1.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Serve {
        listen,
        data_dir,
        allow_unauthenticated,
    } = cli.command
    {
        return serve::serve(listen, data_dir, allow_unauthenticated).await;
    }
    let server = Server::new(&cli.url, cli.api_key.clone())?;
    if let Err(e) = client_command(&server, cli.command, cli.json).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn client_command(server: &Server, command: Command, as_json: bool) -> anyhow::Result<()> {
    let print = |value: &Value, human: &dyn Fn(&Value)| {
        if as_json {
            output::json(value);
        } else {
            human(value);
        }
    };
    match command {
        Command::Serve { .. } => unreachable!("handled by run"),
        Command::Collections(Collections::List) => {
            let v = server.get("/v1/collections").await?;
            print(&v, &|v| {
                for name in v["collections"].as_array().into_iter().flatten() {
                    println!("{}", cell(name));
                }
            });
        }
        Command::Collections(Collections::Create {
            name,
            dimension,
            metric,
            id_type,
            attributes,
        }) => {
            let attributes = attributes
                .iter()
                .map(|a| match a.split_once(':') {
                    Some((n, t)) if !n.is_empty() && !t.is_empty() => {
                        Ok(json!({"name": n, "type": t}))
                    }
                    _ => bail!("--attribute {a:?}: expected NAME:TYPE, e.g. year:i64"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({"dimension": dimension, "metric": metric, "id_type": id_type,
                              "attributes": attributes});
            let v = server
                .call(
                    Method::PUT,
                    &collection_path(&name),
                    Some(&body),
                    Retry::Safe,
                )
                .await?;
            print(&v, &|_| println!("collection {name} is ready"));
        }
        Command::Collections(Collections::Describe { name }) => {
            let v = server.get(&collection_path(&name)).await?;
            print(&v, &describe);
        }
        Command::Collections(Collections::Drop { name, yes }) => {
            if !yes {
                bail!("dropping {name} deletes all its data: pass --yes to confirm");
            }
            let v = server
                .call(
                    Method::DELETE,
                    &collection_path(&name),
                    None,
                    Retry::SafeGone,
                )
                .await?;
            print(&v, &|_| println!("dropped {name}"));
        }
        Command::Import(args) => import::run(server, args, as_json).await?,
        Command::Export(args) => import::export(server, args, as_json).await?,
        Command::Query(args) => query(server, args, as_json).await?,
        Command::Get { collection, id } => {
            let path = format!("{}/rows/{}", collection_path(&collection), escape(&id));
            let v = server.get(&path).await?;
            print(&v, &|v| {
                output::fields(&[
                    ("id", cell(&v["id"])),
                    ("attributes", cell(&v["attributes"])),
                    ("vector", cell(&v["vector"])),
                ])
            });
        }
        Command::Delete {
            collection,
            ids,
            filter,
        } => {
            let mut body = json!({"request_id": uuid::Uuid::new_v4().simple().to_string()});
            match (ids, filter) {
                (Some(ids), _) => body["ids"] = parse_ids(&ids),
                (None, Some(f)) => body["filter"] = json!(f),
                (None, None) => bail!("pass --ids or --filter"),
            }
            let path = format!("{}/delete", collection_path(&collection));
            let v = server.post(&path, &body).await?;
            print(&v, &|v| {
                println!(
                    "deleted {} rows; write token (lsn) {}",
                    cell(&v["rows"]),
                    cell(&v["lsn"])
                )
            });
        }
        Command::Flush { collection } => {
            let path = format!("{}/flush", collection_path(&collection));
            let v = server.post(&path, &json!({})).await?;
            print(&v, &|v| {
                println!(
                    "flushed {} rows and {} deletes into {} segments; checkpoint lsn {}",
                    cell(&v["rows_flushed"]),
                    cell(&v["deletes_flushed"]),
                    cell(&v["segments_written"]),
                    cell(&v["checkpoint_lsn"])
                )
            });
        }
        Command::Warm { collection } => {
            let path = format!("{}/warm", collection_path(&collection));
            let v = server.post(&path, &json!({})).await?;
            print(&v, &|v| {
                println!(
                    "warmed {} indexed segments and {} other files ({} bytes fetched)",
                    cell(&v["indexed_segments"]),
                    cell(&v["other_files"]),
                    cell(&v["stats"]["bytes_fetched"])
                )
            });
        }
        Command::Keys(Keys::List) => {
            let v = server.get("/v1/keys").await?;
            print(&v, &|v| {
                let rows: Vec<Vec<String>> = v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![
                            cell(&k["id"]),
                            cell(&k["name"]),
                            cell(&k["role"]),
                            cell(&k["collections"]),
                            if k["revoked_at_ms"].is_null() {
                                String::new()
                            } else {
                                "revoked".into()
                            },
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "ROLE", "COLLECTIONS", "STATE"], &rows);
            });
        }
        Command::Keys(Keys::Create {
            name,
            role,
            collections,
        }) => {
            let mut body = json!({"name": name, "role": role});
            if !collections.is_empty() {
                body["collections"] = json!(collections);
            }
            // Not retried once sent: a second attempt would make a second key.
            let v = server
                .call(Method::POST, "/v1/keys", Some(&body), Retry::IfUnsent)
                .await?;
            print(&v, &|v| {
                println!("{}", cell(&v["key"]));
                eprintln!(
                    "key {} ({}) created; the secret above is shown only now",
                    cell(&v["id"]),
                    cell(&v["role"])
                );
            });
        }
        Command::Keys(Keys::Revoke { id }) => {
            let v = server
                .call(
                    Method::DELETE,
                    &format!("/v1/keys/{}", escape(&id)),
                    None,
                    Retry::Safe,
                )
                .await?;
            print(&v, &|_| println!("revoked {id}"));
        }
    }
    Ok(())
}

fn describe(v: &Value) {
    let attrs: Vec<String> = v["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}:{}", cell(&a["name"]), cell(&a["type"])))
        .collect();
    let mut pairs = vec![
        ("name", cell(&v["name"])),
        ("dimension", cell(&v["dimension"])),
        ("metric", cell(&v["metric"])),
        ("id_type", cell(&v["id_type"])),
        ("attributes", attrs.join(", ")),
        ("incarnation", cell(&v["incarnation"])),
    ];
    if let Some(stats) = v["stats"].as_object() {
        for (k, value) in stats {
            pairs.push((k.as_str(), cell(value)));
        }
    }
    output::fields(&pairs);
}

async fn query(server: &Server, args: QueryArgs, as_json: bool) -> anyhow::Result<()> {
    let mut body = json!({"top_k": args.top_k, "include_vector": args.include_vector,
                          "explain": args.explain});
    body["consistency"] = consistency(&args.consistency)?;
    if let Some(v) = &args.vector {
        let vector: Value =
            serde_json::from_str(v).context("--vector: expected a JSON array of numbers")?;
        body["vector"] = vector;
    }
    if let Some(f) = &args.filter {
        body["filter"] = json!(f);
    }
    if args.vector.is_none() && args.filter.is_none() {
        bail!("pass --vector to search, --filter to scan, or both");
    }
    let path = format!("{}/query", collection_path(&args.collection));
    let v = server.post(&path, &body).await?;
    if as_json {
        output::json(&v);
        return Ok(());
    }
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let mut headers = vec!["ID"];
    if args.vector.is_some() {
        headers.push("DISTANCE");
    }
    headers.push("ATTRIBUTES");
    if args.include_vector {
        headers.push("VECTOR");
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![cell(&r["id"])];
            if args.vector.is_some() {
                row.push(cell(&r["distance"]));
            }
            row.push(cell(&r["attributes"]));
            if args.include_vector {
                row.push(cell(&r["vector"]));
            }
            row
        })
        .collect();
    output::table(&headers, &rows);
    eprintln!("{} rows at lsn {}", results.len(), cell(&v["lsn"]));
    if let Some(next) = v.get("next_cursor").filter(|c| !c.is_null()) {
        eprintln!("more rows match; the next page starts after id {next}");
    }
    if args.explain {
        output::json(&v["explain"]);
    }
    Ok(())
}

/// `--consistency` as the API takes it: `strong`, `eventual`, or an lsn
/// (a write token) as `{"at_least_lsn": N}`.
fn consistency(text: &str) -> anyhow::Result<Value> {
    Ok(match text {
        "strong" | "eventual" => json!(text),
        lsn => json!({"at_least_lsn": lsn.parse::<u64>().with_context(|| {
            format!("--consistency {lsn:?}: expected strong, eventual or an lsn")
        })?}),
    })
}

/// `1,2,3` as u64 ids, or strings when any is not a number.
fn parse_ids(text: &str) -> Value {
    let parts: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    match parts
        .iter()
        .map(|p| p.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(numbers) => json!(numbers),
        Err(_) => json!(parts),
    }
}
