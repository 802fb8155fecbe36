//! The `facecompare` command line (SPEC §4). STUB.
use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
