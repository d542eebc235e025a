//! stub
use std::process::ExitCode;
#[derive(clap::Args)]
pub struct LintArgs {}
pub fn run(_a: LintArgs) -> Result<ExitCode, String> { Err("todo".into()) }
