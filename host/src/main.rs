fn main() -> std::process::ExitCode {
    callpipe_host::cli::main()
}
