//! The `eliza-cloud` binary: parse the command line and hand it to the library.

fn main() -> std::process::ExitCode {
    let cli: eliza_cloud::cli::Cli = argh::from_env();
    eliza_cloud::run(cli)
}
