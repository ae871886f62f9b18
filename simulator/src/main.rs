//! `switchyard-sim`: fake model-server pods, load generation and the local demo.

#![forbid(unsafe_code)]

const USAGE: &str = "\
usage: switchyard-sim <command> [options]

commands:
  help    print this message

Profiles available to the engine model: h100-llama3-8b (default), a10g-llama-7b.
";

fn main() {
    print!("{USAGE}");
}
