//! `switchyard explain` and `switchyard state`: the admin API's command-line clients. The
//! binary hands its arguments here when the first one names a subcommand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::proto::admin_client::AdminClient;
use super::proto::{
    ExplainRequest, GetStateRequest, Header, WatchStateRequest, explain_request::Input,
};
use super::render;

/// The first arguments that select a client subcommand instead of the server.
pub const SUBCOMMANDS: [&str; 2] = ["explain", "state"];

/// Where the admin API listens by default (`--admin-port`, `--admin-bind-address`).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9004";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    about = "Clients of a running Switchyard's admin API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Why a request would go where it goes: each filter's verdict, each scorer's raw and
    /// weighted score, the pick and the flow-control decision. With --config-file, the same
    /// request against an alternative configuration, side by side. Changes no state.
    Explain(Box<ExplainArgs>),
    /// Endpoints, metrics and their age, scrape health, the configuration in force, the prefix
    /// index, flow-control queues and VTC counters.
    State(StateArgs),
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The admin API (host:port).
    #[arg(long, default_value = DEFAULT_ADMIN_ADDR)]
    admin_addr: String,
    /// The model the client asks for (with --prompt, --prompt-file or --messages-file).
    #[arg(long)]
    model: Option<String>,
    /// A completion prompt (/v1/completions).
    #[arg(long, group = "input")]
    prompt: Option<String>,
    /// A file holding the completion prompt.
    #[arg(long, group = "input", value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// A file holding chat messages as a JSON array (/v1/chat/completions).
    #[arg(long, group = "input", value_name = "FILE")]
    messages_file: Option<PathBuf>,
    /// A file holding a request body exactly as the client sends it (see --path).
    #[arg(long, group = "input", value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// The request path with --body-file.
    #[arg(long, default_value = "/v1/completions")]
    path: String,
    /// A request header, e.g. x-gateway-inference-fairness-id=tenant-a (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// The gateway's subset hint: endpoint IPs or ip:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    subset: Vec<String>,
    /// Seed for the random choices (tie-breaks, exploration, random pickers, rewrites).
    #[arg(long)]
    seed: Option<u64>,
    /// An alternative EndpointPickerConfig to compare with the one in force.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Print the answer as protobuf JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StateArgs {
    /// The admin API (host:port).
    #[arg(long, default_value = DEFAULT_ADMIN_ADDR)]
    admin_addr: String,
    /// Keep printing the state as it changes.
    #[arg(long)]
    watch: bool,
    /// With --watch: least time between two states, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u32,
    /// At most this many flows and VTC counters each.
    #[arg(long, default_value_t = 100)]
    max_tenants: u32,
    /// Print the answer as protobuf JSON (one document per line with --watch).
    #[arg(long)]
    json: bool,
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to the admin API at {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("rendering JSON: {0}")]
    Json(String),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

/// Writes `text` to stdout. False when the reader went away (`| head`): stop quietly.
fn emit(text: &str) -> Result<bool, CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Output(e)),
    }
}

/// Runs the subcommand `args` names (`args[0]` is the program, `args[1]` the subcommand) and
/// returns the process's exit code.
pub fn main(args: Vec<String>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Explain(a) => explain(*a).await,
        Command::State(a) => state(a).await,
    }
}

async fn connect(addr: &str) -> Result<AdminClient<Channel>, CliError> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    AdminClient::connect(url)
        .await
        .map(|c| c.max_decoding_message_size(64 << 20))
        .map_err(|source| CliError::Connect {
            addr: addr.to_string(),
            source,
        })
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, CliError> {
    Ok(String::from_utf8_lossy(&read(path)?).into_owned())
}

/// The explain request the arguments describe.
fn explain_request(a: &ExplainArgs) -> Result<ExplainRequest, CliError> {
    let input = match (&a.prompt, &a.prompt_file, &a.messages_file, &a.body_file) {
        (Some(p), ..) => Input::Prompt(p.clone()),
        (_, Some(f), ..) => Input::Prompt(read_text(f)?),
        (_, _, Some(f), _) => Input::MessagesJson(read_text(f)?),
        (_, _, _, Some(f)) => Input::Body(read(f)?),
        _ => {
            return Err(CliError::Usage(
                "give the request: --prompt, --prompt-file, --messages-file or --body-file".into(),
            ));
        }
    };
    if !matches!(input, Input::Body(_)) && a.model.is_none() {
        return Err(CliError::Usage(
            "--model is required with --prompt, --prompt-file and --messages-file".into(),
        ));
    }
    let headers = a
        .headers
        .iter()
        .map(|h| {
            let (name, value) = h
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--header {h:?}: expected NAME=VALUE")))?;
            Ok(Header {
                name: name.trim().to_string(),
                value: value.to_string(),
            })
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    Ok(ExplainRequest {
        input: Some(input),
        model: a.model.clone().unwrap_or_default(),
        path: a.path.clone(),
        headers,
        subset: a.subset.clone(),
        seed: a.seed,
        alternative_config: match &a.config_file {
            Some(f) => read_text(f)?,
            None => String::new(),
        },
    })
}

async fn explain(a: ExplainArgs) -> Result<(), CliError> {
    let req = explain_request(&a)?;
    let mut client = connect(&a.admin_addr).await?;
    let resp = client.explain(req).await?.into_inner();
    let text = if a.json {
        to_json(&resp, "switchyard.admin.v1.ExplainResponse", true)? + "\n"
    } else {
        render::explain_text(&resp)
    };
    emit(&text)?;
    Ok(())
}

async fn state(a: StateArgs) -> Result<(), CliError> {
    let mut client = connect(&a.admin_addr).await?;
    if !a.watch {
        let s = client
            .get_state(GetStateRequest {
                max_tenants: a.max_tenants,
            })
            .await?
            .into_inner();
        let text = if a.json {
            to_json(&s, "switchyard.admin.v1.State", true)? + "\n"
        } else {
            render::state_text(&s)
        };
        emit(&text)?;
        return Ok(());
    }
    let mut stream = client
        .watch_state(WatchStateRequest {
            max_tenants: a.max_tenants,
            min_interval_ms: a.interval_ms,
        })
        .await?
        .into_inner();
    let started = std::time::Instant::now();
    while let Some(s) = stream.next().await {
        let s = s?;
        let text = if a.json {
            to_json(&s, "switchyard.admin.v1.State", false)? + "\n"
        } else {
            format!(
                "--- {:.1}s\n{}",
                started.elapsed().as_secs_f64(),
                render::state_text(&s)
            )
        };
        if !emit(&text)? {
            break;
        }
    }
    Ok(())
}

/// `msg` as protobuf JSON (field names in lowerCamelCase, enums by name), through the admin
/// API's descriptor set.
pub fn to_json(
    msg: &impl prost::Message,
    full_name: &str,
    pretty: bool,
) -> Result<String, CliError> {
    let err = |e: &dyn std::fmt::Display| CliError::Json(e.to_string());
    let pool = DescriptorPool::decode(super::proto::FILE_DESCRIPTOR_SET).map_err(|e| err(&e))?;
    let desc = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| CliError::Json(format!("no message {full_name}")))?;
    let dm = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|e| err(&e))?;
    let opts = SerializeOptions::new().stringify_64_bit_integers(false);
    let mut buf = Vec::new();
    if pretty {
        let mut ser = serde_json::Serializer::pretty(&mut buf);
        dm.serialize_with_options(&mut ser, &opts)
            .map_err(|e| err(&e))?;
    } else {
        let mut ser = serde_json::Serializer::new(&mut buf);
        dm.serialize_with_options(&mut ser, &opts)
            .map_err(|e| err(&e))?;
    }
    String::from_utf8(buf).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ExplainArgs {
        let mut v = vec!["switchyard", "explain"];
        v.extend_from_slice(extra);
        match Cli::parse_from(v).command {
            Command::Explain(a) => *a,
            Command::State(_) => unreachable!(),
        }
    }

    #[test]
    fn explain_arguments_become_the_request() {
        let a = args(&[
            "--model",
            "m",
            "--prompt",
            "hi",
            "-H",
            "x-gateway-inference-fairness-id=tenant-a",
            "--subset",
            "10.0.0.1,10.0.0.2:8000",
            "--seed",
            "7",
        ]);
        let r = explain_request(&a).unwrap();
        assert_eq!(r.input, Some(Input::Prompt("hi".into())));
        assert_eq!(r.model, "m");
        assert_eq!(r.headers[0].name, "x-gateway-inference-fairness-id");
        assert_eq!(r.headers[0].value, "tenant-a");
        assert_eq!(r.subset, vec!["10.0.0.1", "10.0.0.2:8000"]);
        assert_eq!(r.seed, Some(7));
        assert!(r.alternative_config.is_empty());
    }

    #[test]
    fn explain_arguments_are_checked() {
        let e = explain_request(&args(&["--prompt", "hi"])).unwrap_err();
        assert!(e.to_string().contains("--model is required"), "{e}");
        let e = explain_request(&args(&["--model", "m"])).unwrap_err();
        assert!(e.to_string().contains("give the request"), "{e}");
        let e = explain_request(&args(&["--model", "m", "--prompt", "p", "-H", "novalue"]))
            .unwrap_err();
        assert!(e.to_string().contains("NAME=VALUE"), "{e}");
        let e = explain_request(&args(&["--body-file", "/nonexistent/body.json"])).unwrap_err();
        assert!(
            e.to_string().starts_with("reading /nonexistent/body.json"),
            "{e}"
        );
        assert!(
            Cli::try_parse_from(["switchyard", "explain", "--prompt", "a", "--body-file", "b"])
                .is_err(),
            "one input at a time"
        );
    }

    #[test]
    fn json_names_fields_in_camel_case_and_enums_by_name() {
        use super::super::proto::{Admission, ExplainResponse, Explanation, admission::Decision};
        let r = ExplainResponse {
            live: Some(Explanation {
                admission: Some(Admission {
                    decision: Decision::Queue as i32,
                    queue_position: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            seed: 5,
            ..Default::default()
        };
        let j = to_json(&r, "switchyard.admin.v1.ExplainResponse", false).unwrap();
        assert_eq!(
            j,
            r#"{"live":{"admission":{"decision":"QUEUE","queuePosition":3}},"seed":5}"#
        );
    }
}
