//! `do-cli`: see the crate docs, or `do-cli --help`.

fn main() -> std::process::ExitCode {
    let stdin = std::io::stdin();
    let code = do_cli::run(
        std::env::args_os(),
        &mut stdin.lock(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
