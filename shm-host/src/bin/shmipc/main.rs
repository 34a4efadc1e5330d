//! `shmipc`: the command-line tool for shm segments.
//!
//! - `demo`: a server and client processes streaming zero-copy buffers, one killed mid-way.
//! - `inspect NAME [--json]`: the state of a segment, like `ipcs`.
//! - `bench [--json]`: latency and throughput against a Unix socket pair and a pipe.
//! - `clean`: removes segments whose processes are all dead.
//! - `serve NAME`: a foreground server printing what arrives.
//! - `send NAME --tag N [FILE|-]`: sends one buffer.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod clean;
mod demo;
mod inspect;
mod send;
mod serve;
mod util;

/// Zero-copy shared-memory IPC: demo, inspection, benchmarks and scripting helpers.
#[derive(Parser, Debug)]
#[command(name = "shmipc", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Server + client processes streaming buffers; one client is killed mid-stream.
    Demo(demo::Args),
    /// One client process of `demo`.
    #[command(hide = true)]
    DemoClient(demo::ClientArgs),
    /// Shows a segment: header, processes, queues, free list, statistics, check().
    Inspect(inspect::Args),
    /// Ping-pong latency and throughput vs. a Unix socket pair and a pipe.
    Bench(bench::Args),
    /// The peer process of `bench`.
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
    /// Removes segments whose participants are all dead.
    Clean(clean::Args),
    /// Runs a server in the foreground, printing events and messages.
    Serve(serve::Args),
    /// Sends one buffer (a file or stdin) to a segment's server.
    Send(send::Args),
}

/// An error with every context it was given, `doing this: because of that`.
fn with_causes(e: anyhow::Error) -> Box<dyn std::error::Error> {
    format!("{e:#}").into()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::DemoClient(a) => demo::run_client(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Bench(a) => bench::run(a).map_err(with_causes),
        Cmd::BenchPeer(a) => bench::run_peer(a).map_err(with_causes),
        Cmd::Clean(a) => clean::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Send(a) => send::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmipc: {e}");
            ExitCode::FAILURE
        }
    }
}
