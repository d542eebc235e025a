//! stub
use std::process::ExitCode;
#[derive(clap::Args)]
pub struct ExplainArgs {}
pub fn run(_a: ExplainArgs) -> Result<ExitCode, String> { Err("todo".into()) }
