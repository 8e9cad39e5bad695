//! `weft-proxy`: run the data plane from a config file, or install interception rules.
//! Everything lives in `weft_proxy::cli`, so the `weft` command can offer the same verbs.

fn main() -> std::process::ExitCode {
    weft_proxy::cli::exit(weft_proxy::cli::main())
}
