//! `cloister`: the command line of the Cloister confidential-containers framework.
//!
//! This binary only parses arguments, reads files and prints; the work is done by the libraries.
//! Exit codes: 0 success, 1 usage or input error (one line on stderr naming the problem).

#![forbid(unsafe_code)]

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod emulate;
mod image;
mod initdata;
mod kbs;
mod measure;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc, as in `cloister-kbs`: the KBS client spent about 40% of
/// its CPU in glibc's malloc and free under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cloister: attestation-first confidential containers.
#[derive(Debug, Parser)]
#[command(name = "cloister", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Compute the launch measurement a TEE will report (SEV, SEV-ES, SEV-SNP, TDX, IBM SE).
    Measure(measure::MeasureArgs),
    /// Verify attestation evidence (exit 0 verified, 2 rejected, 1 usage/IO error).
    #[command(subcommand)]
    Verify(verify::VerifyCmd),
    /// Inspect attestation evidence.
    #[command(subcommand)]
    Evidence(verify::EvidenceCmd),
    /// Talk to a key broker (CoCo KBS protocol 0.4.0): attest, get resources, administer.
    Kbs(kbs::KbsArgs),
    /// The emulated TEE platform (development and CI only: proves nothing about hardware).
    #[command(subcommand)]
    Emulate(emulate::EmulateCmd),
    /// Container images as the guest handles them: pull, verify signatures, decrypt, unpack.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Initdata documents: digest (reference value, HOST_DATA, MRCONFIGID) and pod annotation.
    #[command(subcommand)]
    Initdata(initdata::InitDataCmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Measure(args) => measure::run(args),
        Command::Verify(cmd) => verify::run(cmd),
        Command::Evidence(cmd) => verify::run_evidence(cmd),
        Command::Kbs(args) => kbs::run(args),
        Command::Emulate(cmd) => emulate::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Initdata(cmd) => initdata::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`cloister … | head`) is not an error of ours.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => match e.downcast_ref::<verify::Rejected>() {
            Some(r) => {
                eprintln!("{r}");
                ExitCode::from(2)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Help and version go to stdout with status 0; every other parse error is one line, status 1.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap's message spans lines (the problem, then usage); keep the problem, on one line.
            let text = e.to_string();
            let problem: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", problem.join(" "));
            ExitCode::from(1)
        }
    }
}
