fn main() -> std::process::ExitCode {
    declenv::cli::main()
}
