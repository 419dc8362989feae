use clap::Parser as _;
use emptcp::cli::{self, Cli};

fn main() {
    // Usage errors exit 1 (not clap's 2): 2 means "changes present" to
    // scripts that use `plan --detailed-exitcode`.
    let args = match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() {
                cli::EXIT_ERROR
            } else {
                cli::EXIT_OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    cli::init_logging(args.log_format);
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
