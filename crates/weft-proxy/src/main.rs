//! `weft-proxy`: run the data plane from a config file, or install interception rules.
//! Everything lives in `weft_proxy::cli`, so the `weft` command can offer the same verbs.

fn main() -> std::process::ExitCode {
    // Errors as one readable line (with causes), not a debug dump.
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    weft_proxy::cli::main()
}
